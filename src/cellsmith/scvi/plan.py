"""Lightning training plan of the conditional VAE: the data on the device, KL warm-up, Adam.

Everything else (per-epoch seeding, per-epoch logging of every loss term, DDP-synchronised
metrics) is the base :class:`~cellsmith.nn.TrainingPlan`. The data live as dense tensors on
the plan (not in its state dict, so checkpoints hold weights only); batches are index pairs
from :class:`~cellsmith.scvi.batches.EpochBatches`, and the tensors move to the training
device once, when fitting starts, so a step copies only the indices.
"""

from __future__ import annotations

import torch

from cellsmith.nn import LossOutput, TrainingPlan, kl_warmup_weight
from cellsmith.scvi.config import SCVIConfig
from cellsmith.scvi.module import ConditionalVAE

#: Names of the data tensors the plan holds.
_DATA = ("x", "x_log", "library", "encoder_covariates", "decoder_covariates")


class SCVIPlan(TrainingPlan):
    """Trains a :class:`ConditionalVAE` on in-memory tensors.

    Parameters
    ----------
    module
        The torch module.
    x, x_log, library
        (N, G) counts, (N, G) encoder input, (N,) library sizes of all cells.
    encoder_covariates, decoder_covariates
        (N, E) and (N, D) one-hot blocks.
    config
        Learning rate, weight decay, KL warm-up and seed (dropout and latent sampling of epoch
        ``e`` use a torch seed derived from ``(seed, e)``, so a resumed run repeats an
        uninterrupted one).
    """

    def __init__(
        self,
        module: ConditionalVAE,
        *,
        x: torch.Tensor,
        x_log: torch.Tensor,
        library: torch.Tensor,
        encoder_covariates: torch.Tensor,
        decoder_covariates: torch.Tensor,
        config: SCVIConfig,
    ):
        super().__init__(module, config)
        self.x, self.x_log, self.library = x, x_log, library
        self.encoder_covariates, self.decoder_covariates = encoder_covariates, decoder_covariates

    def on_fit_start(self) -> None:
        # One copy of the data to the device (plain attributes: Lightning moves parameters and
        # buffers only, and buffers would put the data into every checkpoint).
        for name in _DATA:
            setattr(self, name, getattr(self, name).to(self.device))

    @property
    def kl_weight(self) -> float:
        return kl_warmup_weight(self.current_epoch, self.config.kl_warmup_epochs)

    def compute_loss(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> LossOutput:
        targets, sources = batch
        out = self.module(
            self.x_log[sources],
            self.encoder_covariates[sources],
            self.decoder_covariates[targets],
            self.library[targets],
        )
        # Validation: the full ELBO (KL weight 1) plus the penalty, comparable across the warm-up.
        kl_weight = self.kl_weight if stage == "train" else 1.0
        return self.module.loss(self.x[targets], out, kl_weight=kl_weight)

    def epoch_extras(self) -> dict[str, float]:
        return {"kl_weight": self.kl_weight}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # eps=0.01 as in scvi-tools: it damps the first Adam steps on count-scale losses.
        # fused (CPU and CUDA): one kernel per step instead of a dozen passes over the parameters.
        return torch.optim.Adam(
            self.parameter_groups(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
            eps=0.01,
            fused=self.device.type in ("cpu", "cuda"),
        )
