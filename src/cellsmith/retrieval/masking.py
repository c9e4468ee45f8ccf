"""Screen counts with the perturbation targets masked: the only input an embedder accepts.

The order "raw counts -> mask -> normalise" is enforced by types rather than by convention:
:func:`mask_counts` is the only way to build a :class:`ScreenCounts`, it refuses anything that
is not raw counts (``require_counts``), zeroes the targets on those counts, and only then does
:meth:`ScreenCounts.log1p_cp10k` normalise. Masking after normalisation would leave the target's
share of the library size in every other gene's value (a leak); here it cannot happen.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellsmith.data import normalize, perturbed_genes, require_counts
from cellsmith.errors import ScaleError


class RetrievalWarning(UserWarning):
    """A problem with the input that the benchmark works around (and reports)."""


@dataclass(frozen=True, eq=False)
class ScreenCounts:
    """Raw counts (cells or pseudo-bulks x genes) after masking.

    Attributes
    ----------
    counts
        CSR matrix of non-negative integer counts (float32).
    genes
        Gene names of the columns.
    masked_genes
        Genes whose counts were set to zero in every row (empty when ``mask`` is False).
    mask
        Whether target masking was requested.
    """

    counts: sp.csr_matrix
    genes: tuple[str, ...]
    masked_genes: tuple[str, ...]
    mask: bool

    def __post_init__(self) -> None:
        data = self.counts.data
        if data.size and (data.min() < 0 or not np.all(data == np.round(data))):
            raise ScaleError(
                "ScreenCounts hold raw counts only (non-negative integers); build them with "
                "cellsmith.retrieval.mask_counts from the raw-count AnnData."
            )

    @property
    def n_rows(self) -> int:
        return self.counts.shape[0]

    def rows(self, index: np.ndarray) -> ScreenCounts:
        """The counts of a subset of rows (same genes and mask)."""
        return ScreenCounts(self.counts[index], self.genes, self.masked_genes, self.mask)

    def log1p_cp10k(self) -> np.ndarray:
        """Dense log1p(CP10k) of the masked counts (rows re-normalised after masking)."""
        return np.asarray(normalize.log1p_normalize(self.counts).toarray(), dtype=np.float32)


def mask_counts(
    adata: ad.AnnData,
    *,
    perturbation_key: str,
    control_label: str,
    mask: bool = True,
    layer: str | None = None,
) -> ScreenCounts:
    """Take the raw counts of a screen and zero every perturbation target gene in every cell.

    Every target is masked in every cell, queries and library alike, so that neither a cell's
    own knocked-down target nor the pattern of which targets are present can reveal its label.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in X (or ``layer``) and labels in ``obs[perturbation_key]``.
    perturbation_key, control_label
        Labels column and its control label; labels are parsed with
        :func:`cellsmith.data.parse_perturbation` ("A+B", "A_B", "A+ctrl", controls).
    mask
        False keeps the target counts (the leaky setting, to measure the leakage gap).
    layer
        Layer holding the raw counts (default X).

    Raises
    ------
    ScaleError
        When the matrix is not raw counts (masking normalised values is the bug this prevents).

    Warns
    -----
    RetrievalWarning
        For targets that are not among the genes (nothing to mask for them).
    """
    raw = require_counts(adata, layer=layer)
    counts = sp.csr_matrix(raw, dtype=np.float32, copy=True)
    genes = tuple(map(str, adata.var_names))
    masked: tuple[str, ...] = ()
    if mask:
        targets = perturbed_genes(adata.obs[perturbation_key], control_label)
        present = set(genes)
        masked = tuple(g for g in targets if g in present)
        absent = [g for g in targets if g not in present]
        if absent:
            warnings.warn(
                f"mask requested, but {len(absent)} of {len(targets)} targets are not among the "
                f"{len(genes)} genes, so there is nothing to mask for them (e.g. {', '.join(absent[:8])}).",
                RetrievalWarning,
                stacklevel=2,
            )
        if masked:
            columns = np.isin(np.asarray(genes), masked)
            counts = counts @ sp.diags((~columns).astype(np.float32))
            counts = sp.csr_matrix(counts)
            counts.eliminate_zeros()
    return ScreenCounts(counts, genes, masked, mask)
