"""The learned retrieval head as a cellsmith model, and the embedder the benchmark uses.

:class:`RetrievalHead` follows the model API of every workflow::

    head = RetrievalHead(HeadConfig(seed=0)).train(x, labels, val=x_val, val_labels=y_val)
    z = head.predict(x_test)        # L2-normalised embeddings, batched on head.device
    head.save("head/")
    RetrievalHead.load("head/")

It works on feature rows (the input of a backbone), not on AnnData: dense arrays, tensors,
sparse matrices or any :class:`~cellsmith.retrieval.feature_rows.FeatureRows`; a batch is
densified when it is taken. The benchmark's :class:`HeadEmbedder` turns masked counts into
features with its base embedder (log1p(CP10k) rows for PCA, binned rows for a foundation
model), computed batch by batch, and puts the head on that embedder's backbone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from cellsmith._logging import seed_everything
from cellsmith.errors import InputError
from cellsmith.nn import torch_threads
from cellsmith.nn.base import CellsmithModel
from cellsmith.nn.saving import ModelFiles
from cellsmith.retrieval.backbones import build_backbone, describe_backbone
from cellsmith.retrieval.embedders import Embedder, TorchBackbone
from cellsmith.retrieval.feature_rows import FeatureRows, SubsetRows, as_feature_rows, dense_rows, row_blocks
from cellsmith.retrieval.heads import (
    BalancedBatchSampler,
    HeadConfig,
    HeadTrainingPlan,
    RetrievalHeadModule,
    class_probabilities,
    fit_temperature,
)

Array = np.ndarray | torch.Tensor | FeatureRows


def _subsample_per_class(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def _rows(features: Array, labels: Array | None, name: str) -> tuple[FeatureRows, torch.Tensor | None]:
    """Features as rows and labels as an int64 tensor, after checking they match."""
    x = as_feature_rows(features)
    if len(x.shape) != 2:
        raise InputError(f"{name} features must be a 2-d array (rows x features); got shape {tuple(x.shape)}.")
    if labels is None:
        return x, None
    y = torch.as_tensor(np.require(labels, dtype=np.int64, requirements="W"))
    if y.shape != (x.shape[0],) or (y < 0).any():
        raise InputError(
            f"{name} labels must be one non-negative class index per row ({x.shape[0]} rows); got "
            f"shape {tuple(y.shape)}, minimum {int(y.min()) if y.numel() else 'none'}."
        )
    return x, y


class _Batches(Dataset):
    """Indexed by a batch of row positions (the loaders' samplers yield batches): the rows,
    densified when taken, and their labels."""

    def __init__(self, rows: FeatureRows, labels: torch.Tensor):
        self.rows = rows
        self.labels = labels

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        positions = np.asarray(positions, dtype=np.int64)
        return dense_rows(self.rows.take(positions)), self.labels[torch.from_numpy(positions)]


class RetrievalHead(CellsmithModel):
    """A learned head (MLP -> L2-normalised embedding) on a torch backbone, trained with
    supervised InfoNCE or a cosine classifier on perturbation labels.

    Parameters
    ----------
    config
        Head options (seed included); :class:`HeadConfig` defaults when None.
    backbone
        Maps feature rows to the head's input (e.g. the PCA layer of
        :meth:`PCAEmbedder.backbone`); none: the head works on the features directly. With
        ``config.mode`` "finetune" or "lora" it is trained in place (see :class:`HeadConfig`),
        otherwise frozen.
    """

    workflow = "retrieval-head"
    config_class = HeadConfig
    command = "cellsmith retrieve run"

    def __init__(self, config: HeadConfig | None = None, *, backbone: nn.Module | None = None):
        super().__init__(config)
        self.backbone = backbone
        self.n_features: int | None = None
        #: Classification loss: log training frequencies and the calibrated temperature of
        #: :meth:`class_probabilities` (set after training).
        self.log_prior: np.ndarray | None = None
        self.class_temperature: float | None = None

    @property
    def epochs_trained(self) -> int:
        """Epochs of the last training (0 before)."""
        return 0 if self.history is None else len(self.history)

    @property
    def best_val_hit1(self) -> float:
        """Validation hit@1 of the kept (best) epoch; NaN before training."""
        if self.history is None or "val_hit1" not in self.history:
            return float("nan")
        return float(self.history["val_hit1"].max())

    def train(
        self, features: Array, labels: Array, *, val: Array, val_labels: Array, out_dir: str | Path | None = None
    ) -> Self:
        """Train on feature rows with class-index labels; keep the epoch of best validation hit@1.

        Parameters
        ----------
        features, labels
            Training rows (rows x features) and their perturbation indices (0 .. n_classes - 1).
        val, val_labels
            Validation rows, for early stopping and the best epoch only.
        out_dir
            Folder of ``checkpoints/`` and ``logs/metrics.csv`` (a temporary folder when None).
        """
        cfg = self.config
        x, y = _rows(features, labels, "training")
        x_val, y_val = _rows(val, val_labels, "validation")
        if x_val.shape[1] != x.shape[1]:
            raise InputError(f"validation rows have {x_val.shape[1]} features, training rows {x.shape[1]}.")
        seed_everything(cfg.seed)
        backbone = self.backbone if self.backbone is not None else nn.Identity()
        adapt = getattr(backbone, "adapt", None)  # a foundation backbone: layers, LoRA
        if adapt is not None:
            adapt(cfg)
        elif cfg.mode == "lora":
            raise InputError(
                f"mode lora needs a foundation backbone (LoRA adapts its transformer); got {type(backbone).__name__}."
            )
        else:
            backbone.requires_grad_(cfg.mode == "finetune")
        backbone.train(cfg.mode != "head")  # a frozen backbone keeps dropout etc. off
        with torch.no_grad():
            n_out = backbone(dense_rows(x.take(np.arange(min(2, x.shape[0]))))).shape[1]
        self.module = RetrievalHeadModule(backbone, n_out, int(y.max()) + 1, cfg)
        self.n_features = int(x.shape[1])
        labels_np = y.numpy()
        protos = _subsample_per_class(labels_np, cfg.val_cells_per_perturbation, cfg.seed)
        plan = HeadTrainingPlan(self.module, cfg, SubsetRows(x, protos), y[torch.from_numpy(protos)])
        batch = cfg.perturbations_per_batch * cfg.cells_per_perturbation
        sampler = BalancedBatchSampler(
            labels_np,
            n_perturbations=cfg.perturbations_per_batch,
            n_cells=cfg.cells_per_perturbation,
            n_batches=min(cfg.max_batches_per_epoch, math.ceil(len(labels_np) / batch)),
            seed=cfg.seed,
        )
        # batch_size=None: each sampled batch of positions is one item, taken and densified at once.
        train_loader = DataLoader(_Batches(x, y), sampler=sampler, batch_size=None)
        val_batches = BatchSampler(SequentialSampler(range(x_val.shape[0])), cfg.batch_size, drop_last=False)
        val_loader = DataLoader(_Batches(x_val, y_val), sampler=val_batches, batch_size=None)
        # The balanced sampler draws per process (its seed holds the rank); Lightning must not
        # swap in a distributed sampler, which a batch sampler cannot take.
        self.fit_plan(
            plan, train_loader, val_loader, out_dir=out_dir, monitor="val_hit1", mode="max",
            use_distributed_sampler=False,
        )
        if cfg.loss == "classification":
            counts = np.bincount(labels_np, minlength=self.module.n_classes)
            self.log_prior = np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32)
            cosines = self.predict(x_val) @ self._classifier().T
            self.class_temperature = fit_temperature(cosines, y_val.numpy(), self.log_prior)
        return self

    def _classifier(self) -> np.ndarray:
        weights = self.module.classifier.detach().float().cpu().numpy()
        return weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-12)

    def class_probabilities(self, z: np.ndarray) -> np.ndarray:
        """Class probabilities (rows x classes) of embeddings ``z`` (of :meth:`predict`): the
        cosine classifier's logits at the temperature fitted on validation cells, plus the log
        training frequencies (the balanced sampler trained the classifier without them).

        Raises
        ------
        InputError
            For a head trained with the InfoNCE loss (it has no classifier).
        """
        self.require_trained()
        if self.class_temperature is None:
            raise InputError(
                "class probabilities come from a head trained with loss classification; this one used infonce."
            )
        return class_probabilities(z, self._classifier(), self.class_temperature, self.log_prior)

    def predict(self, features: Array) -> np.ndarray:
        """Embeddings (rows x ``config.dim``, float32, L2-normalised), batched on :attr:`device`."""
        self.require_trained()
        x, _ = _rows(features, None, "prediction")
        if x.shape[1] != self.n_features:
            raise InputError(
                f"the head was trained on {self.n_features} features; got rows of {x.shape[1]}. Embed "
                "with the same base embedder (genes, PCA) as in training."
            )
        device = self.device
        module = self.module.to(device).eval()
        with torch.no_grad(), torch_threads(self.config.num_threads):
            chunks = [
                module(dense_rows(block, device)).float().cpu() for _, block in row_blocks(x, self.config.batch_size)
            ]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, self.config.dim), dtype=np.float32)

    def setup_dict(self) -> dict[str, Any]:
        return {
            "backbone": describe_backbone(self.module.backbone),
            "n_features": self.n_features,
            "n_backbone_out": self.module.n_backbone_out,
            "n_classes": self.module.n_classes,
            "log_prior": None if self.log_prior is None else self.log_prior.tolist(),
            "class_temperature": self.class_temperature,
        }

    def restore(self, files: ModelFiles) -> None:
        setup = files.setup
        self.module = RetrievalHeadModule(
            build_backbone(setup["backbone"]), int(setup["n_backbone_out"]), int(setup["n_classes"]), self.config
        )
        self.module.load_state_dict(files.weights)
        self.n_features = int(setup["n_features"])
        prior = setup.get("log_prior")  # absent in heads saved before class ranking
        self.log_prior = None if prior is None else np.asarray(prior, dtype=np.float32)
        self.class_temperature = setup.get("class_temperature")


class HeadEmbedder(Embedder):
    """A :class:`RetrievalHead` on the backbone of ``base`` (``mode`` "head": backbone frozen;
    "finetune": backbone trained too, at ``backbone_learning_rate``; "lora": adapters in it). The split seed passed to
    :meth:`fit` becomes the head's ``config.seed``."""

    def __init__(self, name: str, base: Embedder, config: HeadConfig, *, work_dir: Path | None = None):
        if not isinstance(base, TorchBackbone):
            raise TypeError(f"embedder '{base.name}' has no torch backbone to put a head on")
        super().__init__(name)
        self.base = base
        self.config = config
        self.work_dir = work_dir
        self.model: RetrievalHead | None = None

    @property
    def epochs_trained(self) -> int:
        return 0 if self.model is None else self.model.epochs_trained

    @property
    def best_val_hit1(self) -> float:
        return float("nan") if self.model is None else self.model.best_val_hit1

    @property
    def ranks_classes(self) -> bool:
        """Heads trained with the classification loss rank candidates by class probability."""
        return self.config.loss == "classification"

    def class_scores(self, embeddings: np.ndarray) -> np.ndarray:
        return self.model.class_probabilities(embeddings)

    @property
    def vocabulary(self) -> str:
        """The base embedder's vocabulary coverage (foundation bases; empty otherwise)."""
        return getattr(self.base, "vocabulary", "")

    def fit(self, train, labels, *, val, val_labels, seed):
        self.base.fit(train, labels, val=val, val_labels=val_labels, seed=seed)
        config = self.config.model_copy(update={"seed": seed})
        self.model = RetrievalHead(config, backbone=self.base.backbone()).train(
            self.base.features(train), labels, val=self.base.features(val), val_labels=val_labels, out_dir=self.work_dir
        )
        return self

    def transform(self, counts):
        return self.model.predict(self.base.features(counts))
