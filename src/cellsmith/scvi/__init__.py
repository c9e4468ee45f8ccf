"""Conditional scVI: donor / covariate conditioning, always-zero gene penalty, honest
reconstruction and counterfactual prediction.

The model classes are imported on first use, so that ``cellsmith.scvi.cli`` (imported by the
command line at start-up) does not pull in torch and Lightning.
"""

from __future__ import annotations

from cellsmith._lazy import lazy_exports

_EXPORTS = {
    "ConditionalSCVI": "cellsmith.scvi.model",
    "SCVIConfig": "cellsmith.scvi.config",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
