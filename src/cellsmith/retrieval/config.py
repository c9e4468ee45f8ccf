"""Configuration of a retrieval benchmark run (saved as config.yaml beside its results)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from cellsmith.config import CellsmithConfig
from cellsmith.retrieval.heads import HeadConfig
from cellsmith.retrieval.libraries import LIBRARY_KINDS
from cellsmith.retrieval.splits import QuerySpec


class FoundationConfig(CellsmithConfig):
    """The foundation-model embedder (scGPT checkpoint directory and gene aliases)."""

    checkpoint: Path | None = None
    aliases: Path | None = Field(None, description="JSON file {input gene: vocabulary gene}")
    n_bins: int = Field(51, ge=3)
    min_coverage: float = Field(0.95, ge=0, le=1)
    batch_size: int = Field(64, ge=1)
    max_length: int | None = Field(
        None, ge=2, description="tokens per cell, <cls> included; cells with more expressed genes keep a seeded "
        "random subset (None: the checkpoint's max_seq_len, 1200 for whole-human)"
    )


class RetrievalConfig(CellsmithConfig):
    """Every option of ``cellsmith retrieve run``; CLI flags override the YAML values."""

    perturbation_key: str = "target_gene"
    control_label: str = "non-targeting"
    layer: str | None = None
    embedders: list[str] = ["pca", "logreg", "head:pca"]
    libraries: list[str] = ["mean", "bootstrap", "raw_cell"]
    classifier_ranking: bool = Field(True, description="also rank by class probability (the class library) for logreg")
    queries: list[str] = ["cell", "pseudobulk:50"]
    mask: bool = True
    leakage_gap: bool = Field(True, description="with mask on, also run mask off to show the leakage gap")
    seeds: list[int] = [42]
    test_fraction: float = Field(0.3, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    min_cells: int = Field(10, ge=3)
    pseudobulk_per_perturbation: int = Field(20, ge=1)
    n_pcs: int = Field(50, ge=1)
    pca_max_cells: int = Field(
        50_000, ge=2, description="PCA (pca, logreg, head:pca) is fitted on at most this many training cells "
        "(a seeded subsample when there are more), so that its cost is bounded whatever the screen size"
    )
    scvi_max_epochs: int = Field(30, ge=1, description="training epochs of the scvi embedder")
    logreg_c: float = Field(1.0, gt=0)
    n_bootstrap: int = Field(10, ge=1)
    bootstrap_fraction: float = Field(0.5, gt=0, le=1)
    raw_cell_k: int = Field(10, ge=1)
    threads: int = Field(1, ge=1, description="BLAS and torch threads during the run")
    head: HeadConfig = HeadConfig()
    foundation: FoundationConfig = FoundationConfig()

    @field_validator("libraries")
    @classmethod
    def _known_libraries(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in LIBRARY_KINDS]
        if unknown or not value:
            raise ValueError(f"libraries must be among {', '.join(LIBRARY_KINDS)}; got {value}")
        return value

    @field_validator("queries")
    @classmethod
    def _known_queries(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one query type is needed (cell, pseudobulk:N)")
        return [QuerySpec.parse(v).name for v in value]

    @field_validator("embedders", "seeds")
    @classmethod
    def _not_empty(cls, value: list) -> list:
        if not value:
            raise ValueError("needs at least one value")
        return value

    @property
    def mask_modes(self) -> list[bool]:
        """Mask on (and off, for the leakage gap) or off only."""
        return [True, False] if self.mask and self.leakage_gap else [self.mask]
