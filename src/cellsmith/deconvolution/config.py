"""Configuration of HP-VADE training (saved as ``config.yaml`` in every model directory)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from cellsmith.nn.config import TrainingConfig


class DeconvolutionConfig(TrainingConfig):
    """Every option of :class:`cellsmith.deconvolution.Deconvolver`; YAML keys are these names.

    The training options (``max_epochs``, ``learning_rate``, ``accelerator`` ...) are those of
    :class:`~cellsmith.nn.TrainingConfig`, with HP-VADE's defaults. The cellsmith 0.1 key
    ``torch_threads`` loads as ``num_threads`` with a deprecation warning.
    """

    # Genes: marker genes per cell type (fold change of mean CPM), mitochondrial and ribosomal
    # genes excluded (their share differs most between single-cell and bulk protocols).
    n_marker_genes: int | None = Field(
        150, ge=1, description="Marker genes per cell type (union kept); None: every gene."
    )
    min_mean_cpm: float = Field(10.0, ge=0, description="A marker's mean CPM in its own type.")
    min_cell_fraction: float = Field(
        0.5, ge=0, le=1, description="A marker is detected in at least this share of its type's cells "
        "(not driven by a few training cells, whose profile new cells do not share)."
    )
    exclude_gene_patterns: list[str] = Field(default_factory=lambda: ["^MT-", "^RP[SL]\\d"])
    min_gene_overlap: float = Field(0.8, gt=0, le=1, description="Min share of model genes in a bulk.")

    # Pseudo-bulk simulation.
    cells_per_sample: int = Field(500, ge=1)
    alpha: float = Field(1.0, gt=0, description="Dirichlet concentration of proportions.")
    sparse_fraction: float = Field(0.3, ge=0, le=1, description="Share of samples with absent types.")
    n_train_samples: int = Field(8000, ge=1)
    n_val_samples: int = Field(1000, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of cells kept for validation.")
    vae_cells_per_type: int = Field(
        5000, ge=1, description="The VAE branch keeps at most this many training (and validation) cells "
        "per type, drawn with the seed, sparse (bounds its memory on large references; pseudo-bulks "
        "still draw from every cell)."
    )
    gene_noise_sd: float | tuple[float, float] = Field(
        (0.0, 0.8), description="SD of per-sample, per-gene log-normal factors on training pseudo-bulk "
        "(re-drawn every batch): sample-to-sample and platform variation the reference cells lack. A "
        "number: every sample gets that SD (cellsmith <= 0.2 used 0.3); a pair [low, high]: each sample "
        "draws its SD uniformly in that range, so that every batch has near-clean and strongly shifted "
        "samples (measured: robust to platform factors of SD 1, for held-out MAE 0.0151 instead of "
        "0.0145, mean of 3 seeds)."
    )

    @field_validator("gene_noise_sd")
    @classmethod
    def _noise_range(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        low, high = _as_range(value)
        if not 0 <= low <= high:
            raise ValueError(f"needs 0 <= low <= high, got {value}")
        return value

    @property
    def gene_noise_range(self) -> tuple[float, float]:
        """``gene_noise_sd`` as ``(low, high)`` (equal for a single number)."""
        return _as_range(self.gene_noise_sd)

    # Model.
    mrna_content_weighting: bool = Field(
        True, description="Bulk reconstruction cpm((p * content) @ S.T) with each type's mean counts "
        "per cell (False: the plain p @ S.T, which treats cell fractions as read fractions)."
    )
    bulk_mrna_content: Literal["immune", "reference"] | dict[str, float] = Field(
        "immune", description="mRNA per cell of each type in real bulk, which weights its cells "
        "(cellsmith.deconvolution.content): 'immune' (measured values matched to immune type names), "
        "'reference' (the reference's counts per cell: pseudo-bulks of its own cells) or a table "
        "cell type -> mRNA per cell. Applied at prediction; training is unchanged."
    )
    unknown_mrna: float | None = Field(
        None, gt=0, description="mRNA per cell of the cells the reference lacks, on the scale of "
        "bulk_mrna_content (None: 0.4, a typical cell, with 'immune'; a table's 'unknown' entry). 0.13 "
        "suits neutrophils in whole blood. The unknown fraction is then a share of such cells."
    )
    n_latent: int = Field(32, ge=1)
    vae_hidden: list[int] = Field(default_factory=lambda: [256])
    deconv_hidden: list[int] = Field(default_factory=lambda: [512, 256])
    dropout: float = Field(0.1, ge=0, lt=1)

    # Loss weights (VAE reconstruction has weight 1).
    lambda_proto: float = Field(0.1, ge=0)
    lambda_bulk_recon: float = Field(10.0, ge=0)
    lambda_bulk: float = Field(5.0, ge=0)
    lambda_kl: float = Field(0.01, ge=0)
    prop_kl_weight: float = Field(0.1, ge=0, description="Weight of KL(p_true || p) in the proportion loss.")

    # Optimisation (shared names; HP-VADE's defaults).
    learning_rate: float = Field(1e-3, gt=0, description="Optimiser learning rate.")
    weight_decay: float = Field(1e-5, ge=0, description="AdamW weight decay (not applied to log S).")
    batch_size: int = Field(128, ge=1, description="Pseudo-bulk samples per batch.")
    cell_batch_size: int = Field(128, ge=1, description="Reference cells per batch (VAE branch).")
    max_epochs: int = Field(80, ge=1, description="Upper bound on training epochs.")
    patience: int = Field(10, ge=0, description="Early-stopping patience in epochs (0: off).")
    lr_patience: int = Field(
        4, ge=0, description="Halve the learning rate after this many epochs without a better "
        "validation loss (0: constant learning rate)."
    )
    num_threads: int | None = Field(
        1, ge=1, description="CPU threads while training and predicting; 1 avoids thread spinning on "
        "shared machines (None: torch's setting)."
    )


def _as_range(value: float | tuple[float, float]) -> tuple[float, float]:
    return (value, value) if isinstance(value, (int, float)) else (value[0], value[1])
