"""Learned retrieval heads on a torch backbone: balanced batches, InfoNCE or classification.

Three layers, as elsewhere in cellsmith: :class:`RetrievalHeadModule` (pure torch, ``loss()``
returns :class:`HeadLoss`), :class:`HeadTrainingPlan` (Lightning: separate learning rates for
backbone and head, validation hit@1 for early stopping) and :class:`HeadEmbedder` (the
embedder interface the benchmark uses).

A contrastive loss needs several cells of the same perturbation in a batch (a batch with one
cell per perturbation has no positives), so batches come from :class:`BalancedBatchSampler`:
each holds ``perturbations_per_batch`` perturbations x ``cells_per_perturbation`` cells.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from cellsmith._logging import seed_everything
from cellsmith.config import CellsmithConfig
from cellsmith.nn import load_best_weights, make_trainer, mlp
from cellsmith.retrieval.embedders import Embedder, TorchBackbone

HeadMode = Literal["head", "finetune"]
HeadLossName = Literal["infonce", "classification"]


class HeadConfig(CellsmithConfig):
    """Training of a learned head (``head:BASE[:MODE[:LOSS]]`` overrides mode and loss)."""

    mode: HeadMode = "head"
    loss: HeadLossName = "infonce"
    hidden: list[int] = [256]
    dim: int = 64
    temperature: float = Field(0.1, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    lr_head: float = Field(1e-3, gt=0)
    lr_backbone: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    perturbations_per_batch: int = Field(8, ge=4, le=8)
    cells_per_perturbation: int = Field(8, ge=4, le=8)
    max_batches_per_epoch: int = Field(50, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(5, ge=0)
    val_cells_per_perturbation: int = Field(50, ge=1)
    progress_bar: bool = False


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches of ``n_perturbations`` perturbations x ``n_cells`` cells each.

    Perturbations are drawn without replacement (all of them when there are fewer), cells
    without replacement when a perturbation has enough, with replacement otherwise. Epoch
    ``e`` of seed ``s`` always yields the same batches.
    """

    def __init__(self, labels: np.ndarray, *, n_perturbations: int, n_cells: int, n_batches: int, seed: int):
        self.groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.n_perturbations = min(n_perturbations, len(self.groups))
        self.n_cells = n_cells
        self.n_batches = n_batches
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        for _ in range(self.n_batches):
            chosen = rng.choice(len(self.groups), size=self.n_perturbations, replace=False)
            batch = [
                rng.choice(self.groups[g], size=self.n_cells, replace=self.groups[g].size < self.n_cells)
                for g in chosen
            ]
            yield np.concatenate(batch).tolist()


@dataclass
class HeadLoss:
    """Named loss terms of one batch."""

    loss: torch.Tensor
    n_positive_pairs: int


def supervised_info_nce(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> tuple[torch.Tensor, int]:
    """Supervised InfoNCE: every other cell of the same perturbation is a positive.

    ``z``: (B, d) L2-normalised embeddings; ``labels``: (B,). Anchors without a positive in the
    batch are left out (and counted: zero positives means the sampler is wrong).
    """
    logits = z @ z.T / temperature  # (B, B)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positive.sum(1)
    has_pos = n_pos > 0
    per_anchor = -(log_prob.masked_fill(~positive, 0.0).sum(1)[has_pos] / n_pos[has_pos])
    return per_anchor.mean(), int(positive.sum())


class RetrievalHeadModule(nn.Module):
    """backbone -> MLP head -> L2-normalised embedding; a cosine classifier for the
    classification loss. Tensors in, tensors out; no AnnData."""

    def __init__(self, backbone: nn.Module, n_backbone_out: int, n_classes: int, config: HeadConfig):
        super().__init__()
        self.backbone = backbone
        self.head = mlp(n_backbone_out, config.hidden, config.dim, dropout=config.dropout)
        self.classifier = nn.Parameter(torch.randn(n_classes, config.dim) * 0.01)
        self.loss_name = config.loss
        self.temperature = config.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=-1)  # (B, dim)

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> HeadLoss:
        z = self(x)
        if self.loss_name == "infonce":
            value, n_pos = supervised_info_nce(z, labels, self.temperature)
            return HeadLoss(value, n_pos)
        logits = z @ F.normalize(self.classifier, dim=-1).T / self.temperature
        return HeadLoss(F.cross_entropy(logits, labels), 0)


class HeadTrainingPlan(L.LightningModule):
    """Optimisation of a :class:`RetrievalHeadModule`; logs ``val_hit1`` (nearest centroid of
    a training subset) for early stopping and best-checkpoint selection."""

    def __init__(self, module: RetrievalHeadModule, config: HeadConfig, prototype_x: torch.Tensor, prototype_y: torch.Tensor):
        super().__init__()
        self.module = module
        self.config = config
        self.prototype_x = prototype_x
        self.prototype_y = prototype_y
        self._centroids: torch.Tensor | None = None
        self._hits: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        terms = self.module.loss(x, y)
        self.log("train_loss", terms.loss, on_epoch=True, on_step=False, batch_size=len(y))
        return terms.loss

    def on_validation_epoch_start(self) -> None:
        with torch.no_grad():
            z = torch.cat([self.module(chunk) for chunk in self.prototype_x.split(1024)])
        n_classes = self.module.classifier.shape[0]
        sums = torch.zeros(n_classes, z.shape[1]).index_add_(0, self.prototype_y, z)
        self._centroids = F.normalize(sums, dim=-1)
        self._hits = []

    def validation_step(self, batch, batch_idx):
        x, y = batch
        predicted = (self.module(x) @ self._centroids.T).argmax(1)
        self._hits.append(predicted == y)

    def on_validation_epoch_end(self) -> None:
        self.log("val_hit1", torch.cat(self._hits).float().mean())

    def configure_optimizers(self):
        backbone = [p for p in self.module.backbone.parameters() if p.requires_grad]
        groups = [{"params": [*self.module.head.parameters(), self.module.classifier], "lr": self.config.lr_head}]
        if backbone:
            groups.append({"params": backbone, "lr": self.config.lr_backbone})
        return torch.optim.AdamW(groups, weight_decay=self.config.weight_decay)


def _subsample_per_class(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


class HeadEmbedder(Embedder):
    """A learned head on the backbone of ``base`` (``mode`` "head": backbone frozen;
    "finetune": backbone trained too, at ``lr_backbone``)."""

    def __init__(self, name: str, base: Embedder, config: HeadConfig, *, work_dir: Path | None = None):
        if not isinstance(base, TorchBackbone):
            raise TypeError(f"embedder '{base.name}' has no torch backbone to put a head on")
        super().__init__(name)
        self.base = base
        self.config = config
        self.work_dir = work_dir
        self.module: RetrievalHeadModule | None = None
        self.epochs_trained = 0
        self.best_val_hit1 = float("nan")

    def fit(self, train, labels, *, val, val_labels, seed):
        self.base.fit(train, labels, val=val, val_labels=val_labels, seed=seed)
        cfg = self.config
        x_train, x_val = self.base.features(train), self.base.features(val)
        y_train, y_val = torch.as_tensor(labels), torch.as_tensor(val_labels)
        seed_everything(seed)
        backbone = self.base.backbone()
        backbone.requires_grad_(cfg.mode == "finetune")
        backbone.train(cfg.mode == "finetune")  # a frozen backbone keeps dropout etc. off
        with torch.no_grad():
            n_out = backbone(x_train[:2]).shape[1]
        module = RetrievalHeadModule(backbone, n_out, int(labels.max()) + 1, cfg)
        protos = torch.as_tensor(_subsample_per_class(labels, cfg.val_cells_per_perturbation, seed))
        plan = HeadTrainingPlan(module, cfg, x_train[protos], y_train[protos])
        batch = cfg.perturbations_per_batch * cfg.cells_per_perturbation
        sampler = BalancedBatchSampler(
            labels,
            n_perturbations=cfg.perturbations_per_batch,
            n_cells=cfg.cells_per_perturbation,
            n_batches=min(cfg.max_batches_per_epoch, math.ceil(len(labels) / batch)),
            seed=seed,
        )
        train_loader = DataLoader(TensorDataset(x_train, y_train), batch_sampler=sampler)
        val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=1024)
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
            out = self.work_dir or Path(tmp)
            trainer = make_trainer(
                out, max_epochs=cfg.max_epochs, monitor="val_hit1", mode="max",
                patience=cfg.patience, progress_bar=cfg.progress_bar,
            )
            trainer.fit(plan, train_loader, val_loader)
            load_best_weights(trainer, plan)
            self.best_val_hit1 = float(trainer.checkpoint_callback.best_model_score or float("nan"))
        self.epochs_trained = trainer.current_epoch
        self.module = copy.deepcopy(plan.module).eval()
        return self

    def transform(self, counts):
        x = self.base.features(counts)
        with torch.no_grad():
            return torch.cat([self.module(chunk) for chunk in x.split(1024)]).numpy()
