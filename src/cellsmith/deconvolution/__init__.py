"""Deconvolution: HP-VADE from a labelled single-cell reference to bulk cell-type proportions.

Layers: :class:`HPVADE` (pure torch), :class:`HPVADEPlan` (Lightning), :class:`Deconvolver`
(AnnData contract: train / predict / evaluate / save / load); :func:`nnls_proportions` is the
baseline reported beside every result. Names are imported on first use, so that
``cellsmith.deconvolution.cli`` (imported by the command line at start-up) does not pull in
torch and Lightning.
"""

from __future__ import annotations

from cellsmith._lazy import lazy_exports

_EXPORTS = {
    "HPVADE": "cellsmith.deconvolution.module",
    "LossWeights": "cellsmith.deconvolution.module",
    "HPVADEPlan": "cellsmith.deconvolution.plan",
    "Comparison": "cellsmith.deconvolution.evaluate",
    "compare": "cellsmith.deconvolution.evaluate",
    "read_mapping": "cellsmith.deconvolution.evaluate",
    "read_predictions": "cellsmith.deconvolution.evaluate",
    "read_truth": "cellsmith.deconvolution.evaluate",
    "DeconvolutionConfig": "cellsmith.deconvolution.config",
    "Deconvolver": "cellsmith.deconvolution.model",
    "Prediction": "cellsmith.deconvolution.model",
    "nnls_proportions": "cellsmith.deconvolution.nnls",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
