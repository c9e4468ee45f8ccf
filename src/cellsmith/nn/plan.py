"""The base Lightning training plan of every workflow (as scvi-tools' training plans).

:class:`TrainingPlan` optimises ``module`` on :class:`~cellsmith.nn.LossOutput` values, logs every
term once per epoch as ``train_<name>`` / ``val_<name>`` (sums kept on the device, so a step costs
no host synchronisation), seeds each epoch from ``(seed, epoch)`` so that a resumed run repeats an
uninterrupted one, and builds the optimiser from the shared :class:`~cellsmith.nn.TrainingConfig`.
Workflow plans subclass it only for what differs: the loss of a batch, augmentation, parameter
groups, a learning-rate schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from cellsmith.nn.config import TrainingConfig
from cellsmith.nn.loss import LossOutput

LossFunction = Callable[[Any], LossOutput]


class TrainingPlan(L.LightningModule):
    """Optimise ``module`` with the loss of each batch.

    Parameters
    ----------
    module
        The pure torch module (its parameters with ``requires_grad`` are optimised).
    config
        Learning rate, weight decay and seed.
    loss
        ``batch -> LossOutput``; by default ``module.loss(batch)``. Subclasses may override
        :meth:`compute_loss` instead (for a loss that depends on the stage).
    """

    def __init__(self, module: nn.Module, config: TrainingConfig, *, loss: LossFunction | None = None):
        super().__init__()
        self.module = module
        self.config = config
        self.loss_fn = loss
        self._sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "val": {}}
        self._counts: dict[str, int] = {"train": 0, "val": 0}

    # --------------------------------------------------------------------------- the loss
    def compute_loss(self, batch: Any, stage: str) -> LossOutput:
        """The loss of one batch in ``stage`` ("train" or "val")."""
        return self.loss_fn(batch) if self.loss_fn is not None else self.module.loss(batch)

    def record(self, out: LossOutput, stage: str, batch: Any) -> None:
        """Add the terms of one batch to the running per-epoch sums of ``stage``."""
        n = out.n_obs if out.n_obs is not None else _batch_size(batch)
        sums = self._sums[stage]
        for name, value in out.logged().items():
            value = value.float() * n
            sums[name] = sums[name] + value if name in sums else value
        self._counts[stage] += n

    def _log_epoch(self, stage: str, **extra: float) -> None:
        count = max(1, self._counts[stage])
        metrics = {f"{stage}_{name}": total / count for name, total in self._sums[stage].items()}
        if metrics or extra:
            # sync_dist: under DDP every process logs the mean over all processes.
            self.log_dict({**metrics, **extra}, on_epoch=True, prog_bar=False, sync_dist=True)
        self._sums[stage] = {}
        self._counts[stage] = 0

    # --------------------------------------------------------------------------- Lightning hooks
    def on_train_epoch_start(self) -> None:
        # Dropout and sampling of epoch e depend on (seed, e) only: resuming repeats the run.
        # Extra DDP processes add their rank (each draws its own noise); rank 0 keeps the
        # single-process stream.
        entropy = [self.config.seed, self.current_epoch] + ([self.global_rank] if self.global_rank else [])
        seed = np.random.SeedSequence(entropy).generate_state(1)[0]
        torch.manual_seed(int(seed))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch, "train")
        self.record(out, "train", batch)
        return out.loss

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", **self.epoch_extras())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.record(self.compute_loss(batch, "val"), "val", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def epoch_extras(self) -> dict[str, float]:
        """Extra values logged with the training terms each epoch (e.g. a KL weight)."""
        return {}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups; one group of every trainable parameter by default."""
        return [{"params": [p for p in self.module.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(
            self.parameter_groups(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )


def _batch_size(batch: Any) -> int:
    """Rows of the first tensor of a batch (a tensor, a tuple/list or a dict of tensors)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        batch = list(batch.values())
    for item in batch:
        if isinstance(item, torch.Tensor) and item.dim() > 0:
            return int(item.shape[0])
    return 1
