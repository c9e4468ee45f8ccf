"""Learned retrieval heads on a torch backbone: balanced batches, InfoNCE or classification.

The layers, as elsewhere in cellsmith: :class:`RetrievalHeadModule` (pure torch, ``loss()``
returns :class:`~cellsmith.nn.LossOutput`) and :class:`HeadTrainingPlan` (the shared
:class:`~cellsmith.nn.TrainingPlan` with separate learning rates for backbone and head, and
validation hit@1 for early stopping). The model API (:class:`~cellsmith.retrieval.head_model.RetrievalHead`)
and the benchmark's embedder (:class:`~cellsmith.retrieval.head_model.HeadEmbedder`) are in
:mod:`cellsmith.retrieval.head_model`.

A contrastive loss needs several cells of the same perturbation in a batch (a batch with one
cell per perturbation has no positives), so batches come from :class:`BalancedBatchSampler`:
each holds ``perturbations_per_batch`` perturbations x ``cells_per_perturbation`` cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import Sampler

from cellsmith.nn import LossOutput, TrainingConfig, TrainingPlan, mlp
from cellsmith.retrieval.feature_rows import FeatureRows, dense_rows, row_blocks

HeadMode = Literal["head", "finetune", "lora"]
HeadLossName = Literal["infonce", "classification"]


class HeadConfig(TrainingConfig):
    """Training of a learned head (``head:BASE[:MODE[:LOSS]]`` overrides mode and loss).

    ``mode``: ``head`` trains the head on a frozen backbone, ``finetune`` the backbone too (on a
    foundation backbone only its last ``trainable_layers`` transformer layers when set),
    ``lora`` LoRA adapters of rank ``lora_rank`` in a foundation backbone.
    ``learning_rate`` is the head's (and the cosine classifier's) learning rate,
    ``backbone_learning_rate`` the backbone's (or its adapters') when it trains. The keys of cellsmith 0.1,
    ``lr_head`` and ``lr_backbone``, still load with a deprecation warning.
    """

    renamed_keys: ClassVar[dict[str, str]] = {
        **TrainingConfig.renamed_keys,
        "lr_head": "learning_rate",
        "lr_backbone": "backbone_learning_rate",
    }

    mode: HeadMode = "head"
    loss: HeadLossName = "infonce"
    trainable_layers: int | None = Field(
        None, ge=1, description="finetune on a foundation backbone: train only its last N transformer layers "
        "(None: all of it)."
    )
    lora_rank: Literal[8, 16, 32] = Field(8, description="lora: rank of the adapters (alpha = 2 x rank).")
    hidden: list[int] = [256]
    dim: int = 64
    temperature: float = Field(0.1, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0, description="Learning rate of the head and the classifier.")
    backbone_learning_rate: float = Field(1e-4, gt=0, description="Learning rate of a fine-tuned backbone.")
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(
        1024, ge=1, description="Rows per validation and embedding batch (training batches are balanced: "
        "perturbations_per_batch x cells_per_perturbation)."
    )
    perturbations_per_batch: int = Field(8, ge=4, le=8)
    cells_per_perturbation: int = Field(8, ge=4, le=8)
    max_batches_per_epoch: int = Field(50, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(5, ge=0)
    val_cells_per_perturbation: int = Field(50, ge=1)
    progress_bar: bool = False


def _rank() -> int:
    """This process's rank in a multi-device run (0 otherwise)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches of ``n_perturbations`` perturbations x ``n_cells`` cells each.

    Perturbations are drawn without replacement (all of them when there are fewer), cells
    without replacement when a perturbation has enough, with replacement otherwise. Epoch
    ``e`` of seed ``s`` always yields the same batches; in a multi-device run every process
    draws its own batches (the rank enters the seed).
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
        rng = np.random.default_rng([self.seed, self.epoch, _rank()])
        self.epoch += 1
        for _ in range(self.n_batches):
            chosen = rng.choice(len(self.groups), size=self.n_perturbations, replace=False)
            batch = [
                rng.choice(self.groups[g], size=self.n_cells, replace=self.groups[g].size < self.n_cells)
                for g in chosen
            ]
            yield np.concatenate(batch).tolist()


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


def fit_temperature(cosines: np.ndarray, labels: np.ndarray, log_prior: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017) of prior-adjusted cosine logits.

    The temperature ``T`` of ``softmax(cosines / T + log_prior)`` with the least negative
    log-likelihood of ``labels`` (validation cells), on a log grid from 0.005 to 2.
    ``log_prior`` holds the log training frequencies: the balanced sampler trains the
    classifier for equally frequent classes, adding them back (logit adjustment, Menon et al.
    2021) gives probabilities for cells as frequent as in the screen, as logistic regression's.
    """
    grid = np.geomspace(0.005, 2.0, 61)
    rows = np.arange(len(labels))
    losses = []
    for t in grid:
        logits = cosines / t + log_prior  # (cells, classes)
        peak = logits.max(1, keepdims=True)
        log_norm = np.log(np.exp(logits - peak).sum(1)) + peak[:, 0]
        losses.append(float(np.mean(log_norm - logits[rows, labels])))
    return float(grid[int(np.argmin(losses))])


def class_probabilities(z: np.ndarray, classifier: np.ndarray, temperature: float, log_prior: np.ndarray) -> np.ndarray:
    """``softmax(cos(z, classifier rows) / temperature + log_prior)``, rows x classes (float32);
    ``z`` L2-normalised embeddings."""
    weights = classifier / np.maximum(np.linalg.norm(classifier, axis=1, keepdims=True), 1e-12)
    logits = z @ weights.T / temperature + log_prior
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


class RetrievalHeadModule(nn.Module):
    """backbone -> MLP head -> L2-normalised embedding; a cosine classifier for the
    classification loss. Tensors in, tensors out; no AnnData.

    Parameters
    ----------
    backbone
        Maps feature rows to ``n_backbone_out`` columns (a PCA layer, a foundation encoder).
    n_classes
        Perturbations (rows of the cosine classifier).
    """

    def __init__(self, backbone: nn.Module, n_backbone_out: int, n_classes: int, config: HeadConfig):
        super().__init__()
        self.backbone = backbone
        self.n_backbone_out = n_backbone_out
        self.head = mlp(n_backbone_out, config.hidden, config.dim, dropout=config.dropout)
        # Only the classification loss uses the classifier; frozen otherwise, so that DDP finds no
        # parameter without a gradient.
        self.classifier = nn.Parameter(
            torch.randn(n_classes, config.dim) * 0.01, requires_grad=config.loss == "classification"
        )
        self.loss_name = config.loss
        self.temperature = config.temperature

    @property
    def n_classes(self) -> int:
        return int(self.classifier.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=-1)  # (B, dim)

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        """The InfoNCE loss (term ``positive_pairs``: same-perturbation pairs in the batch) or
        the cross-entropy of the cosine classifier."""
        return self.embedding_loss(self(x), labels)

    def embedding_loss(self, z: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        """:meth:`loss` of embeddings already computed (validation reuses them for hit@1)."""
        if self.loss_name == "infonce":
            value, n_pos = supervised_info_nce(z, labels, self.temperature)
            return LossOutput(value, {"positive_pairs": torch.tensor(float(n_pos))})
        logits = z @ F.normalize(self.classifier, dim=-1).T / self.temperature
        return LossOutput(F.cross_entropy(logits, labels))


class HeadTrainingPlan(TrainingPlan):
    """Optimisation of a :class:`RetrievalHeadModule`.

    Beside the shared ``train_*`` / ``val_*`` loss terms it logs ``val_hit1`` (validation cells
    matched to the centroids of a per-perturbation subset of training cells: ``prototype_x``
    rows, densified a batch at a time, and ``prototype_y`` labels), which early stopping and
    best-checkpoint selection maximise.
    The head and classifier train at ``learning_rate``, a fine-tuned backbone at
    ``backbone_learning_rate``.
    """

    def __init__(
        self, module: RetrievalHeadModule, config: HeadConfig, prototype_x: FeatureRows, prototype_y: torch.Tensor
    ):
        super().__init__(module, config)
        self.prototype_x = prototype_x
        self.prototype_y = prototype_y
        self._centroids: torch.Tensor | None = None
        self._hits: list[torch.Tensor] = []

    def compute_loss(self, batch: Any, stage: str) -> LossOutput:
        x, labels = batch
        return self.module.loss(x, labels)

    def on_validation_epoch_start(self) -> None:
        with torch.no_grad():
            z = torch.cat([self.module(dense_rows(block, self.device))
                           for _, block in row_blocks(self.prototype_x, self.config.batch_size)]).float()
        sums = torch.zeros(self.module.n_classes, z.shape[1], device=z.device)
        self._centroids = F.normalize(sums.index_add_(0, self.prototype_y.to(z.device), z), dim=-1)
        self._hits = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        z = self.module(x)  # once: for the loss terms and for hit@1
        self.record(self.module.embedding_loss(z, y), "val", batch)
        self._hits.append((z.float() @ self._centroids.T).argmax(1) == y)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log("val_hit1", torch.cat(self._hits).float().mean(), sync_dist=True)

    def parameter_groups(self) -> list[dict[str, Any]]:
        head = [p for p in [*self.module.head.parameters(), self.module.classifier] if p.requires_grad]
        groups = [{"params": head, "lr": self.config.learning_rate}]
        backbone = [p for p in self.module.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"params": backbone, "lr": self.config.backbone_learning_rate})
        return groups
