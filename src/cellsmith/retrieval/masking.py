"""Screen counts with the perturbation targets masked: the only input an embedder accepts.

The order "raw counts -> mask -> normalise" is enforced by types rather than by convention:
:func:`mask_counts` is the only way to build a :class:`ScreenCounts` from a screen, it refuses
anything that is not raw counts (``count_rows`` audits them), and every read of its rows zeroes
the targets on those counts before :meth:`ScreenCounts.log1p` normalises them. Masking after
normalisation would leave the target's share of the library size in every other gene's value (a
leak); here it cannot happen.

A :class:`ScreenCounts` is a view: the screen's counts (CSR in memory, or an h5ad opened backed),
a set of rows and the masked columns. Nothing is copied or densified when it is built or
subset; rows are read, masked and normalised block by block when an embedder takes them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellsmith.data import normalize, perturbed_genes
from cellsmith.data.rows import CountRows, count_rows
from cellsmith.errors import ScaleError
from cellsmith.retrieval.feature_rows import MappedRows, row_blocks

#: Rows of the screen checked to be raw counts when a view is built (a cheap guard; the whole
#: screen is audited block by block by :func:`cellsmith.data.rows.count_rows`).
_CHECKED_ROWS = 1024
#: A sorted set of backed rows spanning at most this many times their number is read as one
#: contiguous slice (then subset in memory) rather than row by row.
_CONTIGUOUS_SPAN = 4


class RetrievalWarning(UserWarning):
    """A problem with the input that the benchmark works around (and reports)."""


def _drop_columns(block: sp.csr_matrix, dropped: np.ndarray) -> sp.csr_matrix:
    """``block`` without the stored values of the columns where ``dropped`` is True (a new
    matrix; the input, which may share memory with the screen, is left as it is)."""
    keep = ~dropped[block.indices]
    if keep.all():
        return block
    kept_before = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
    return sp.csr_matrix((block.data[keep], block.indices[keep], kept_before[block.indptr]), shape=block.shape)


@dataclass(frozen=True, eq=False)
class ScreenCounts:
    """Raw counts of some rows of a screen (cells or pseudo-bulks x genes), masked when read.

    Attributes
    ----------
    source
        The screen's raw counts, read by rows (in memory or backed).
    genes
        Gene names of the columns.
    masked_genes
        Genes whose counts are set to zero in every row (empty when ``mask`` is False).
    mask
        Whether target masking was requested.
    index
        Rows of ``source`` in this view, in order (None: all of them).
    """

    source: CountRows
    genes: tuple[str, ...]
    masked_genes: tuple[str, ...]
    mask: bool
    index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, CountRows):
            raise ScaleError(
                "ScreenCounts hold raw counts read by rows; build them with "
                "cellsmith.retrieval.mask_counts from the raw-count AnnData."
            )
        if self.index is None:
            object.__setattr__(self, "index", np.arange(self.source.n_rows))
        first = self.source.read(0, min(_CHECKED_ROWS, self.source.n_rows)).data
        if first.size and (first.min() < 0 or not np.all(first == np.round(first))):
            raise ScaleError(
                "ScreenCounts hold raw counts only (non-negative integers); build them with "
                "cellsmith.retrieval.mask_counts from the raw-count AnnData."
            )
        dropped = np.isin(np.asarray(self.genes), self.masked_genes)
        object.__setattr__(self, "_dropped", dropped)

    @property
    def n_rows(self) -> int:
        return self.index.size

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_rows, len(self.genes)

    def rows(self, index: np.ndarray) -> ScreenCounts:
        """The counts of a subset of rows (same genes and mask); nothing is read."""
        return ScreenCounts(self.source, self.genes, self.masked_genes, self.mask, self.index[np.asarray(index)])

    def take(self, positions: np.ndarray) -> sp.csr_matrix:
        """Masked counts of the rows at ``positions`` of this view (CSR float32, in that order)."""
        rows = self.index[np.asarray(positions, dtype=np.int64)]
        sorted_span = rows.size > 1 and np.all(np.diff(rows) > 0) and rows[-1] - rows[0] < _CONTIGUOUS_SPAN * rows.size
        if self.source.backed and sorted_span:
            block = self.source.read(int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]]
        else:
            block = self.source.take(rows)
        return _drop_columns(block, self._dropped)

    def log1p(self) -> MappedRows:
        """log1p(CP10k) of the masked counts as rows normalised when taken (each row
        re-normalised after masking); sparse blocks, nothing densified."""
        return MappedRows(self, normalize.log1p_normalize, len(self.genes))

    def csr(self) -> sp.csr_matrix:
        """All rows' masked counts as one in-memory CSR matrix (read block by block)."""
        return sp.vstack([block for _, block in row_blocks(self)], format="csr")

    def log1p_cp10k(self) -> sp.csr_matrix:
        """All rows' log1p(CP10k) as one in-memory CSR matrix (sparse; for bounded row sets)."""
        return sp.vstack([block for _, block in row_blocks(self.log1p())], format="csr")


def mask_counts(
    adata: ad.AnnData,
    *,
    perturbation_key: str,
    control_label: str,
    mask: bool = True,
    layer: str | None = None,
    source: CountRows | None = None,
) -> ScreenCounts:
    """Take the raw counts of a screen and zero every perturbation target gene in every cell.

    Every target is masked in every cell, queries and library alike, so that neither a cell's
    own knocked-down target nor the pattern of which targets are present can reveal its label.
    Works on an AnnData in memory and on one opened backed (:func:`cellsmith.data.rows.read_backed`);
    nothing is copied: the targets are zeroed on every block of rows read.

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
    source
        The counts of ``adata`` already read by :func:`cellsmith.data.rows.count_rows` (so that
        several mask settings audit the screen once); read from ``adata`` when None.

    Raises
    ------
    ScaleError
        When the matrix is not raw counts (masking normalised values is the bug this prevents).

    Warns
    -----
    RetrievalWarning
        For targets that are not among the genes (nothing to mask for them).
    """
    source = source if source is not None else count_rows(adata, layer=layer)
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
    return ScreenCounts(source, genes, masked, mask)
