"""Backbones of learned heads as JSON and back, so that a saved head can rebuild its module.

A spec names the backbone's ``kind`` and its shape; the weights travel in the head's state
dict. Kinds: ``identity`` (a head on the features themselves), ``linear`` (the PCA layer) and
``foundation`` (the ``<cls>`` encoder of a foundation transformer, see
:mod:`cellsmith.retrieval.foundation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from cellsmith.errors import InputError, ModelDirectoryError

KINDS = ("identity", "linear", "foundation")


def describe_backbone(module: nn.Module) -> dict[str, Any]:
    """The spec of ``module`` (JSON-serialisable).

    Raises
    ------
    InputError
        For a module of no known kind (such a head trains and embeds, but cannot be saved).
    """
    if isinstance(module, nn.Identity):
        return {"kind": "identity"}
    if type(module) is nn.Linear:
        return {"kind": "linear", "n_inputs": module.in_features, "n_outputs": module.out_features}
    if hasattr(module, "backbone_spec"):
        return module.backbone_spec()
    raise InputError(
        f"a head on a {type(module).__name__} backbone cannot be saved: a saved head rebuilds its "
        f"backbone from its kind ({', '.join(KINDS)}); give the module a backbone_spec() method."
    )


def build_backbone(spec: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised backbone of ``spec`` (load the head's state dict into it).

    Raises
    ------
    ModelDirectoryError
        For a spec of an unknown kind (a damaged or newer setup.json).
    """
    kind = spec.get("kind")
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(int(spec["n_inputs"]), int(spec["n_outputs"]))
    if kind == "foundation":
        from cellsmith.retrieval.foundation import CLSEncoder

        return CLSEncoder.from_spec(spec)
    raise ModelDirectoryError(
        f"setup.json names a backbone of kind '{kind}'; this cellsmith rebuilds {', '.join(KINDS)}. "
        "Upgrade cellsmith or retrain the head."
    )
