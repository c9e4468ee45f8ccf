"""Lightning training plan of the conditional VAE: batches densified on the device, KL warm-up, Adam.

Everything else (per-epoch seeding, per-epoch logging of every loss term, DDP-synchronised
metrics) is the base :class:`~cellsmith.nn.TrainingPlan`. Batches are
:data:`~cellsmith.scvi.batches.Batch` tuples: cell indices and their CSR count rows, densified
on the training device when the step takes them (:func:`~cellsmith.scvi.data.dense_inputs`);
the one-hot covariates of the batch are built there from the per-cell integer codes the plan
holds (not in its state dict, so checkpoints hold weights only).
"""

from __future__ import annotations

import numpy as np
import torch

from cellsmith.nn import LossOutput, TrainingPlan, kl_warmup_weight
from cellsmith.scvi.batches import Batch
from cellsmith.scvi.config import SCVIConfig
from cellsmith.scvi.data import dense_inputs, one_hot
from cellsmith.scvi.module import ConditionalVAE


class SCVIPlan(TrainingPlan):
    """Trains a :class:`ConditionalVAE` on count-row batches.

    Parameters
    ----------
    module
        The torch module.
    codes
        Integer category code of every key per cell (N,).
    categories
        Categories of every key, in code order.
    encoder_keys, decoder_keys
        Keys whose one-hots the encoder and the decoder see.
    config
        Learning rate, weight decay, KL warm-up and seed (dropout and latent sampling of epoch
        ``e`` use a torch seed derived from ``(seed, e)``, so a resumed run repeats an
        uninterrupted one).
    """

    def __init__(
        self,
        module: ConditionalVAE,
        *,
        codes: dict[str, np.ndarray],
        categories: dict[str, list[str]],
        encoder_keys: list[str],
        decoder_keys: list[str],
        config: SCVIConfig,
    ):
        super().__init__(module, config)
        self.codes, self.categories = codes, categories
        self.encoder_keys, self.decoder_keys = encoder_keys, decoder_keys

    @property
    def kl_weight(self) -> float:
        return kl_warmup_weight(self.current_epoch, self.config.kl_warmup_epochs)

    def compute_loss(self, batch: Batch, stage: str) -> LossOutput:
        targets, sources, rows, source_rows = batch
        x, x_log, library = dense_inputs(rows, source_rows, self.device)
        out = self.module(
            x_log,
            one_hot(self.codes, self.encoder_keys, self.categories, sources.cpu(), self.device),
            one_hot(self.codes, self.decoder_keys, self.categories, targets.cpu(), self.device),
            library,
        )
        # Validation: the full ELBO (KL weight 1) plus the penalty, comparable across the warm-up.
        kl_weight = self.kl_weight if stage == "train" else 1.0
        return self.module.loss(x, out, kl_weight=kl_weight)

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
