"""One Lightning training plan for both phases: optimise ``loss``, log every named term."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn


class LossPlan(L.LightningModule):
    """Train ``module`` on ``loss(batch)``, a dataclass of named terms whose ``loss`` field is
    optimised; every term is logged per epoch as ``train_<name>`` / ``val_<name>``.

    Parameters
    ----------
    module
        The pure torch module (its trainable parameters are optimised).
    loss
        ``batch -> dataclass`` of scalar tensors, with a ``loss`` field.
    learning_rate
        AdamW learning rate (weight decay 1e-4).
    """

    def __init__(self, module: nn.Module, loss: Callable[[dict[str, torch.Tensor]], Any], *, learning_rate: float):
        super().__init__()
        self.module = module
        self.loss_fn = loss
        self.learning_rate = learning_rate

    def _step(self, batch: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        terms = self.loss_fn(batch)
        size = next(iter(batch.values())).shape[0]
        for field in dataclasses.fields(terms):
            self.log(
                f"{prefix}_{field.name}", getattr(terms, field.name), prog_bar=field.name == "loss",
                on_step=False, on_epoch=True, batch_size=size,
            )
        return terms.loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        params = [p for p in self.module.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=1e-4)
