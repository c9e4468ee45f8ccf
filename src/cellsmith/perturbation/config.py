"""Configs of the two phases (pydantic, unknown keys refused, saved with every model).

Both extend the shared :class:`~cellsmith.nn.TrainingConfig` (``max_epochs``, ``max_steps``,
``learning_rate``, ``weight_decay``, ``batch_size``, ``patience``, ``seed``, ``accelerator``,
``devices``, ``precision``, ``strategy``, ``num_threads``, ``progress_bar``) and keep the
defaults of cellsmith 0.1, so that a model trains as it did.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from cellsmith.nn import TrainingConfig

#: Threads of both phases: 1 avoids thread contention on small batches (BENCHMARKS.md).
_THREADS_HELP = "torch CPU threads (1 avoids thread contention on small batches; None keeps torch's)."


class PretrainConfig(TrainingConfig):
    """Masked-expression pretraining of one embedding per gene of the space."""

    n_embed: int = Field(64, ge=2, description="Width of each gene embedding.")
    hidden: list[int] = Field(default_factory=lambda: [128], description="Encoder MLP widths.")
    mask_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="Share of measured genes hidden per cell.")
    batch_size: int = Field(128, ge=2, description="Cells per training batch.")
    max_epochs: int = Field(60, ge=1, description="Upper bound on training epochs.")
    patience: int = Field(8, ge=0, description="Early-stopping patience in epochs (0: off).")
    learning_rate: float = Field(3e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW weight decay.")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of cells for early stopping (20 cells or more)."
    )
    vocabulary_min_cells: int = Field(
        3, ge=1, description="Genes detected in this many cells of a source join the target vocabulary."
    )
    cache: bool = Field(
        False, description="Remap the cells once and keep them in memory (sparse) instead of per batch."
    )
    num_threads: int | None = Field(1, ge=1, description=_THREADS_HELP)


class FinetuneConfig(TrainingConfig):
    """The control-set response model, its training and the split.

    ``batch_size`` counts (perturbation, context) set pairs per step; cellsmith 0.1 called it
    ``pairs_per_batch`` (still read, with a deprecation warning).
    """

    renamed_keys: ClassVar[dict[str, str]] = {**TrainingConfig.renamed_keys, "pairs_per_batch": "batch_size"}

    set_size: int = Field(32, ge=2, description="Cells per control / perturbed set.")
    min_cells: int = Field(10, ge=1, description="Perturbations with fewer cells are refused.")
    hidden: int = Field(128, ge=4, description="Width of the cell, set and perturbation codes.")
    batch_size: int = Field(16, ge=1, description="(perturbation, context) set pairs per step.")
    steps_per_epoch: int = Field(30, ge=1, description="Optimiser steps per epoch (set pairs are drawn afresh).")
    max_epochs: int = Field(30, ge=1, description="Upper bound on training epochs.")
    patience: int = Field(6, ge=0, description="Early-stopping patience in epochs (0: off).")
    learning_rate: float = Field(2e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW weight decay.")
    mean_weight: float = Field(
        1.0, ge=0.0, description="Weight of the squared error of set means beside the energy distance."
    )
    freeze_embeddings: bool = Field(True, description="Keep the pretrained gene embeddings fixed.")
    n_embed: int = Field(64, ge=2, description="Embedding width without pretraining (random embeddings).")
    context_key: str | None = Field(None, description="obs column of the control context (donor, replicate...).")
    missing_targets: Literal["learn", "drop", "error"] = Field(
        "learn",
        description="Targets with no embedding (not in the vocabulary): learn one from their training cells, "
        "drop their perturbations, or refuse (each with the targets listed).",
    )
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share held out (targets or cells).")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of the cells left after the test cut used for early stopping."
    )
    linear_components: int = Field(10, ge=1, description="PCA components of the linear baseline.")
    linear_ridge: float = Field(0.1, ge=0.0, description="Ridge lambda of the linear baseline.")
    scvi_baseline: bool = Field(
        False, description="Also train the conditional scVI (cellsmith.scvi) as a fourth baseline (seen targets only)."
    )
    scvi_max_epochs: int = Field(60, ge=1, description="Epochs of the scVI baseline.")
    num_threads: int | None = Field(1, ge=1, description=_THREADS_HELP)
