"""Lightning training plan of HP-VADE: optimisation, logging and first-batch diagnostics."""

from __future__ import annotations

import lightning as L
import torch

from cellsmith._logging import logger
from cellsmith.deconvolution.module import HPVADE, HPVADELoss, LossWeights, log_cpm

#: A weighted loss term this many times larger than every other one drowns them out.
DOMINANCE_RATIO = 1e3


def _stats(x: torch.Tensor) -> dict[str, float]:
    x = x.detach().float()
    return {"min": float(x.min()), "max": float(x.max()), "mean": float(x.mean())}


def first_batch_diagnostics(
    module: HPVADE, out: dict[str, torch.Tensor], bulk_cpm: torch.Tensor, loss: HPVADELoss,
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
    from cellsmith.data import normalize

    ranges = {
        "bulk_cpm": _stats(bulk_cpm),
        "network_input": _stats(normalize.bulk_to_network(bulk_cpm)),
        "signature_cpm": _stats(module.signature),
        "bulk_rec_cpm": _stats(out["bulk_rec"]),
        "bulk_rec_log": _stats(log_cpm(out["bulk_rec"])),
        "proportions": _stats(out["proportions"]),
    }
    weighted = loss.weighted(weights)
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


class HPVADEPlan(L.LightningModule):
    """Trains :class:`HPVADE` on (bulk CPM, true proportions) batches plus random cell batches.

    Parameters
    ----------
    module
        The torch module.
    train_cells, val_cells
        ``(C, G)`` log1p(CP10k) cells and their ``(C,)`` type codes, for the VAE branch.
    weights
        Loss weights.
    gene_noise_sd
        Training bulk is multiplied by per-sample, per-gene ``exp(N(0, sd))`` factors and
        re-normalised to CPM (augmentation; validation bulk is left as simulated).
    cell_batch_size, learning_rate, weight_decay
        Optimisation.
    lr_patience
        Halve the learning rate after this many epochs without a better validation loss (0: off).
    """

    def __init__(
        self,
        module: HPVADE,
        train_cells: tuple[torch.Tensor, torch.Tensor],
        val_cells: tuple[torch.Tensor, torch.Tensor],
        *,
        weights: LossWeights,
        gene_noise_sd: float,
        cell_batch_size: int,
        learning_rate: float,
        weight_decay: float,
        lr_patience: int = 0,
    ):
        super().__init__()
        self.module = module
        self.train_cells, self.val_cells = train_cells, val_cells
        self.weights = weights
        self.gene_noise_sd = gene_noise_sd
        self.cell_batch_size = cell_batch_size
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.lr_patience = lr_patience
        self.diagnostics: dict | None = None

    def _cell_batch(self, cells: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor):
        return cells[0][index], cells[1][index]

    def _step(self, batch, cells, cell_index, prefix: str) -> HPVADELoss:
        bulk_cpm, true_props = batch
        cells_log, cell_types = self._cell_batch(cells, cell_index)
        out = self.module(bulk_cpm, cells_log)
        loss = self.module.loss(out, bulk_cpm, true_props, cells_log, cell_types, self.weights)
        if prefix == "train" and self.diagnostics is None:
            self.diagnostics = first_batch_diagnostics(self.module, out, bulk_cpm, loss, self.weights)
            log_diagnostics(self.diagnostics)
        size = bulk_cpm.shape[0]
        self.log(f"{prefix}_loss", loss.total, prog_bar=True, on_epoch=True, on_step=False, batch_size=size)
        for name, value in loss.terms().items():
            self.log(f"{prefix}_{name}", value, on_epoch=True, on_step=False, batch_size=size)
        return loss

    def _augment(self, bulk_cpm: torch.Tensor) -> torch.Tensor:
        from cellsmith.data import normalize

        if self.gene_noise_sd <= 0:
            return bulk_cpm
        noise = torch.randn_like(bulk_cpm) * self.gene_noise_sd
        return normalize.cpm(bulk_cpm * noise.exp())

    def training_step(self, batch, batch_idx):
        batch = (self._augment(batch[0]), batch[1])
        n_cells = self.train_cells[0].shape[0]
        index = torch.randint(0, n_cells, (self.cell_batch_size,))
        return self._step(batch, self.train_cells, index, "train").total

    def validation_step(self, batch, batch_idx):
        # Deterministic cell batches: the same validation loss for the same weights.
        n_cells = self.val_cells[0].shape[0]
        start = batch_idx * self.cell_batch_size
        index = torch.arange(start, start + self.cell_batch_size) % n_cells
        self._step(batch, self.val_cells, index, "val")

    def configure_optimizers(self):
        # No weight decay on log S: it would pull every signature entry towards 1 CPM.
        signature = [self.module.log_signature]
        others = [p for name, p in self.module.named_parameters() if name != "log_signature"]
        groups = [{"params": others, "weight_decay": self.weight_decay}, {"params": signature, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=self.learning_rate)
        if self.lr_patience <= 0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=self.lr_patience)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
