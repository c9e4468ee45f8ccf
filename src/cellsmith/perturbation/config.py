"""Configs of the two phases (pydantic, unknown keys refused, saved with every model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cellsmith.config import CellsmithConfig


class PretrainConfig(CellsmithConfig):
    """Masked-expression pretraining of one embedding per gene of the space."""

    n_embed: int = Field(64, ge=2, description="Width of each gene embedding.")
    hidden: list[int] = Field(default_factory=lambda: [128], description="Encoder MLP widths.")
    mask_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="Share of measured genes hidden per cell.")
    batch_size: int = Field(128, ge=2)
    max_epochs: int = Field(60, ge=1)
    patience: int = Field(8, description="Early-stopping patience in epochs (<= 0: off).")
    learning_rate: float = Field(3e-3, gt=0.0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    cache: bool = Field(False, description="Keep remapped rows in memory after first use.")
    num_threads: int | None = Field(
        1, ge=1, description="torch CPU threads (1 avoids thread contention on small batches; None keeps torch's)."
    )
    seed: int = 0
    progress_bar: bool = True


class FinetuneConfig(CellsmithConfig):
    """The control-set response model, its training and the split."""

    set_size: int = Field(32, ge=2, description="Cells per control / perturbed set.")
    min_cells: int = Field(10, ge=1, description="Perturbations with fewer cells are refused.")
    hidden: int = Field(128, ge=4, description="Width of the cell, set and perturbation codes.")
    pairs_per_batch: int = Field(16, ge=1, description="(perturbation, context) sets per step.")
    steps_per_epoch: int = Field(30, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(6, description="Early-stopping patience in epochs (<= 0: off).")
    learning_rate: float = Field(2e-3, gt=0.0)
    mean_weight: float = Field(1.0, ge=0.0, description="Weight of the squared error of set means beside the energy distance.")
    freeze_embeddings: bool = Field(True, description="Keep the pretrained gene embeddings fixed.")
    n_embed: int = Field(64, ge=2, description="Embedding width without pretraining (random embeddings).")
    context_key: str | None = Field(None, description="obs column of the control context (donor, replicate...).")
    missing_targets: Literal["drop", "error"] = Field(
        "drop", description="Targets outside the gene space: drop them (with a warning) or refuse."
    )
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share held out (targets or cells).")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of training cells for early stopping.")
    linear_components: int = Field(10, ge=1, description="PCA components of the linear baseline.")
    linear_ridge: float = Field(0.1, ge=0.0, description="Ridge lambda of the linear baseline.")
    scvi_baseline: bool = Field(
        False, description="Also train the conditional scVI (cellsmith.scvi) as a fourth baseline (seen targets only)."
    )
    scvi_max_epochs: int = Field(60, ge=1, description="Epochs of the scVI baseline.")
    num_threads: int | None = Field(
        1, ge=1, description="torch CPU threads (1 avoids thread contention on small batches; None keeps torch's)."
    )
    seed: int = 0
    progress_bar: bool = True
