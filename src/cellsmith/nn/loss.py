"""The one loss output of every cellsmith module (as scvi-tools' ``LossOutput``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """What every module's ``loss()`` returns.

    Attributes
    ----------
    loss
        The scalar that is minimised.
    terms
        Named scalar parts (unweighted or weighted, as the module documents); the training plan
        logs each as ``<stage>_<name>`` beside ``<stage>_loss``.
    n_obs
        Rows the values are averages over (weights the per-epoch means); the batch size when None.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    n_obs: int | None = None

    def logged(self) -> dict[str, torch.Tensor]:
        """``{"loss": loss, **terms}``, detached."""
        return {"loss": self.loss.detach(), **{k: torch.as_tensor(v).detach() for k, v in self.terms.items()}}
