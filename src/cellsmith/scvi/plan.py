"""Lightning training plan of the conditional VAE: optimisation, KL warm-up, logging.

The data live as dense tensors on the plan (not in its state dict); batches are index pairs
from :class:`~cellsmith.scvi.batches.EpochBatches`. Terms are summed on the fly and logged
once per epoch, which keeps the per-step overhead small.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from cellsmith.nn import kl_warmup_weight
from cellsmith.scvi.config import SCVIConfig
from cellsmith.scvi.module import ConditionalVAE, SCVILoss

_TERMS = ("loss", "reconstruction", "kl", "penalty")


class SCVIPlan(L.LightningModule):
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
        Learning rate, weight decay and KL warm-up.
    seed
        Dropout and latent sampling of epoch ``e`` use a torch seed derived from
        ``(seed, e)``, so a resumed run repeats an uninterrupted one.
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
        seed: int,
    ):
        super().__init__()
        self.module = module
        self.x, self.x_log, self.library = x, x_log, library
        self.encoder_covariates, self.decoder_covariates = encoder_covariates, decoder_covariates
        self.config = config
        self.seed = seed
        self._sums = {"train": torch.zeros(len(_TERMS)), "val": torch.zeros(len(_TERMS))}
        self._counts = {"train": 0, "val": 0}

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, kl_weight: float) -> SCVILoss:
        targets, sources = batch
        out = self.module(
            self.x_log[sources],
            self.encoder_covariates[sources],
            self.decoder_covariates[targets],
            self.library[targets],
        )
        terms = self.module.loss(self.x[targets], out, kl_weight=kl_weight)
        n = targets.numel()
        values = torch.stack([terms.loss, terms.reconstruction, terms.kl, terms.penalty]).detach()
        self._sums[stage] += values * n
        self._counts[stage] += n
        return terms

    def _log_epoch(self, stage: str, **extra: float) -> None:
        means = (self._sums[stage] / max(1, self._counts[stage])).tolist()
        metrics = {f"{stage}_{name}": value for name, value in zip(_TERMS, means)}
        self.log_dict({**metrics, **extra}, prog_bar=False, on_epoch=True)
        self._sums[stage].zero_()
        self._counts[stage] = 0

    @property
    def kl_weight(self) -> float:
        return kl_warmup_weight(self.current_epoch, self.config.kl_warmup_epochs)

    def on_train_epoch_start(self) -> None:
        seed = np.random.SeedSequence([self.seed, self.current_epoch]).generate_state(1)[0]
        torch.manual_seed(int(seed))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.kl_weight).loss

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", kl_weight=self.kl_weight)

    def validation_step(self, batch, batch_idx: int) -> None:
        # The full ELBO (KL weight 1) plus the penalty, comparable across epochs of the warm-up.
        self._step(batch, "val", 1.0)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # eps=0.01 as in scvi-tools: it damps the first Adam steps on count-scale losses.
        # fused: one kernel per step instead of a dozen passes over the parameters (same math).
        return torch.optim.Adam(
            self.module.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay, eps=0.01, fused=True
        )
