"""Lightning training plan of HP-VADE: augmentation, cell batches, optimiser groups, learning-rate
schedule and first-batch diagnostics on top of the shared :class:`~cellsmith.nn.TrainingPlan`."""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp
import torch

from cellsmith._logging import logger
from cellsmith.data import normalize
from cellsmith.deconvolution.config import DeconvolutionConfig
from cellsmith.deconvolution.module import HPVADE, LossWeights
from cellsmith.nn import LossOutput, TrainingPlan
from cellsmith.nn.batches import dense_batch

#: A weighted loss term this many times larger than every other one drowns them out.
DOMINANCE_RATIO = 1e3


def _stats(x: torch.Tensor) -> dict[str, float]:
    x = x.detach().float()
    return {"min": float(x.min()), "max": float(x.max()), "mean": float(x.mean())}


def first_batch_diagnostics(
    module: HPVADE, out: dict[str, torch.Tensor], bulk_cpm: torch.Tensor, loss: LossOutput,
    weights: LossWeights,
) -> dict:
    """Ranges of every scale the model touches and the weighted loss terms, with a verdict.

    Returns
    -------
    dict
        ``{"ranges": {name: {min, max, mean}}, "weighted_loss": {term: value},
        "dominant_term": name or None}``; a term is dominant when it exceeds every other
        weighted term by more than 1,000x.
    """
    ranges = {
        "bulk_cpm": _stats(bulk_cpm),
        "network_input": _stats(normalize.bulk_to_network(bulk_cpm)),
        "signature_cpm": _stats(module.signature),
        "bulk_rec_cpm": _stats(out["bulk_rec"]),
        "bulk_rec_log": _stats(normalize.bulk_to_network(out["bulk_rec"])),
        "proportions": _stats(out["proportions"]),
    }
    weighted = {name: float(value.detach()) for name, value in weights.weighted(loss.terms).items()}
    ordered = sorted(weighted.items(), key=lambda kv: kv[1], reverse=True)
    dominant = None
    if len(ordered) > 1 and ordered[0][1] > DOMINANCE_RATIO * max(ordered[1][1], 1e-12):
        dominant = ordered[0][0]
    return {"ranges": ranges, "weighted_loss": weighted, "dominant_term": dominant}


def log_diagnostics(diagnostics: dict) -> None:
    """One line per scale and one for the loss terms; a warning for a dominant term."""
    for name, s in diagnostics["ranges"].items():
        logger.info("first batch %-14s range [%.4g, %.4g], mean %.4g", name, s["min"], s["max"], s["mean"])
    terms = ", ".join(f"{k} {v:.4g}" for k, v in diagnostics["weighted_loss"].items())
    logger.info("first batch weighted loss terms: %s", terms)
    if diagnostics["dominant_term"]:
        logger.warning(
            "loss term '%s' exceeds every other weighted term by more than %gx; the others barely "
            "train. Check the scales above and the lambda_* weights of the config.",
            diagnostics["dominant_term"], DOMINANCE_RATIO,
        )


def loss_weights(config: DeconvolutionConfig) -> LossWeights:
    """The loss weights of a config (VAE reconstruction has weight 1)."""
    return LossWeights(
        vae_kl=config.lambda_kl,
        proto=config.lambda_proto,
        bulk_recon=config.lambda_bulk_recon,
        bulk_prop=config.lambda_bulk,
        prop_kl=config.prop_kl_weight,
    )


class HPVADEPlan(TrainingPlan):
    """Trains :class:`HPVADE` on (bulk CPM, true proportions) batches plus cell batches.

    What differs from the base plan: training bulk is augmented (``config.gene_noise_sd``:
    per-sample, per-gene ``exp(N(0, sd))`` factors with ``sd`` fixed or drawn per sample from a
    range, re-normalised to CPM; validation bulk is left as simulated), every bulk batch comes
    with ``config.cell_batch_size`` cells for the VAE branch (random in training, a fixed sequence
    in validation), log S has no weight decay, the learning rate halves after
    ``config.lr_patience`` epochs without a better validation loss, and the first training batch
    is checked (:func:`first_batch_diagnostics`).

    Parameters
    ----------
    module
        The torch module.
    config
        Loss weights, augmentation, batch sizes and optimiser options.
    train_cells, val_cells
        ``(C, G)`` log1p(CP10k) cells (CSR) and their ``(C,)`` type codes; a batch of cells is
        densified on the training device when it is taken.
    """

    def __init__(
        self,
        module: HPVADE,
        config: DeconvolutionConfig,
        train_cells: tuple[sp.csr_matrix, torch.Tensor],
        val_cells: tuple[sp.csr_matrix, torch.Tensor],
    ):
        super().__init__(module, config)
        self.weights = loss_weights(config)
        # Plain attributes, not buffers: DDP would broadcast buffers at every step.
        self.cells = {"train": train_cells, "val": val_cells}
        self.diagnostics: dict | None = None
        self._val_batch = 0

    def _augment(self, bulk_cpm: torch.Tensor) -> torch.Tensor:
        low, high = self.config.gene_noise_range
        if high <= 0:
            return bulk_cpm
        if low == high:  # no draw of SDs: a fixed SD trains exactly as cellsmith 0.2 did
            noise = torch.randn_like(bulk_cpm) * high
        else:
            # One SD per sample, uniform in [low, high], drawn on the CPU from the epoch's seed.
            sd = low + (high - low) * torch.rand(bulk_cpm.shape[0], 1)
            noise = torch.randn_like(bulk_cpm) * sd.to(device=bulk_cpm.device, dtype=bulk_cpm.dtype)
        return normalize.cpm(bulk_cpm * noise.exp())

    def _cell_batch(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        cells, codes = self.cells[stage]
        size = self.config.cell_batch_size
        if stage == "train":
            # Drawn by the CPU generator (seeded per epoch): the same cells on every device.
            index = torch.randint(0, cells.shape[0], (size,))
        else:
            # Deterministic cell batches: the same validation loss for the same weights.
            start = self._val_batch * size
            self._val_batch += 1
            index = torch.arange(start, start + size) % cells.shape[0]
        return dense_batch(cells[index.numpy()], self.device), codes[index].to(self.device)

    def on_validation_epoch_start(self) -> None:
        self._val_batch = 0

    def compute_loss(self, batch: Any, stage: str) -> LossOutput:
        bulk_cpm, true_props = batch
        if stage == "train":
            bulk_cpm = self._augment(bulk_cpm)
        cells, codes = self._cell_batch(stage)
        out = self.module(bulk_cpm, cells)
        loss = self.module.loss(out, bulk_cpm, true_props, cells, codes, self.weights)
        if stage == "train" and self.diagnostics is None:
            self.diagnostics = first_batch_diagnostics(self.module, out, bulk_cpm, loss, self.weights)
            log_diagnostics(self.diagnostics)
        return loss

    def parameter_groups(self) -> list[dict[str, Any]]:
        # No weight decay on log S: it would pull every signature entry towards 1 CPM.
        others = [p for name, p in self.module.named_parameters() if name != "log_signature"]
        return [{"params": others}, {"params": [self.module.log_signature], "weight_decay": 0.0}]

    def configure_optimizers(self) -> Any:
        optimizer = super().configure_optimizers()
        if self.config.lr_patience <= 0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=self.config.lr_patience)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
