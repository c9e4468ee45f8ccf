"""Raw counts read by rows, from memory (CSR) or from disk (an h5ad opened backed), never whole.

Training, prediction and evaluation of every workflow read cells through :class:`CountRows`:

- in memory, the counts stay a ``scipy.sparse.csr_matrix``; a batch of rows is gathered and
  densified only when it is taken (:func:`cellsmith.nn.batches.dense_batch`, on the device);
- ``backed=True`` opens the h5ad with anndata's own backed reader (``read_h5ad(backed="r")``,
  whose ``X`` is an ``anndata`` sparse dataset read by row slices), so data larger than memory
  are read block by block: :func:`shuffled_row_batches` shuffles the order of row blocks and the
  rows inside a buffer of blocks, the usual way to train on chunked on-disk data (contiguous
  reads, random enough batches). Only the buffer is in memory.

Both give the same batches for the same seed up to the shuffling order, so results with
``--backed`` equal in-memory results up to that order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellsmith.data.audit import describe_source, require_counts
from cellsmith.errors import InputError

#: Rows read at a time by block-wise passes (row sums, moments) and by backed training.
BLOCK_ROWS = 16_384
#: Blocks whose rows are shuffled together in backed training.
BUFFER_BLOCKS = 8


@dataclass
class CountRows:
    """A cells x genes count matrix read by rows.

    Attributes
    ----------
    matrix
        A CSR matrix (in memory) or anndata's backed sparse dataset (on disk).
    backed
        Whether ``matrix`` is read from disk.
    columns
        Optional column order applied to every block read (e.g. a model's gene order); None keeps
        the file's order.
    """

    matrix: object
    backed: bool = False
    columns: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        n_rows, n_cols = self.matrix.shape
        return n_rows, n_cols if self.columns is None else len(self.columns)

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def _finish(self, block) -> sp.csr_matrix:
        block = sp.csr_matrix(block, dtype=np.float32)
        return block[:, self.columns] if self.columns is not None else block

    def read(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as CSR float32 (one contiguous read when backed)."""
        return self._finish(self.matrix[start:stop])

    def take(self, rows: np.ndarray) -> sp.csr_matrix:
        """Rows ``rows`` (any order, repeats allowed) as CSR float32, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.backed:
            return self._finish(self.matrix[rows])
        # The backed reader wants sorted unique rows; put them back in the asked order after.
        unique, inverse = np.unique(rows, return_inverse=True)
        return self._finish(self.matrix[unique])[inverse]

    def blocks(self, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, sp.csr_matrix]]:
        """``(start, rows start:start+block_rows)`` over the whole matrix."""
        for start in range(0, self.n_rows, block_rows):
            yield start, self.read(start, min(start + block_rows, self.n_rows))

    def row_sums(self, block_rows: int = BLOCK_ROWS) -> np.ndarray:
        """(n_rows,) float64 total counts of each row (of the selected columns)."""
        out = np.empty(self.n_rows, dtype=np.float64)
        for start, block in self.blocks(block_rows):
            out[start : start + block.shape[0]] = np.asarray(block.sum(axis=1)).ravel()
        return out


def count_rows(adata: ad.AnnData, *, layer: str | None = None, columns: np.ndarray | None = None) -> CountRows:
    """The raw counts of ``adata`` (X or ``layer``) as :class:`CountRows`, audited block by block.

    Works on an AnnData read into memory (dense input is turned into CSR once) and on one opened
    with ``read_h5ad(path, backed="r")`` (whose X is read row block by row block).

    Raises
    ------
    ScaleError
        When the matrix is not raw counts.
    InputError
        When a backed file keeps the counts in a layer (anndata's backed mode reads X only) or
        its X is dense.
    """
    backed = bool(adata.isbacked)
    if backed and layer not in (None, "X"):
        raise InputError(
            f"{describe_source(adata)} is opened backed, where only X is read from disk; layer "
            f"'{layer}' cannot be. Write the counts to X (adata.X = adata.layers['{layer}']) or drop --backed."
        )
    matrix = require_counts(adata, layer=layer)
    if backed:
        if not hasattr(matrix, "format") or matrix.format != "csr":
            raise InputError(
                f"{describe_source(adata)} stores X as {type(matrix).__name__}; --backed reads "
                "CSR matrices by rows. Rewrite it with X as CSR (adata.X = scipy.sparse.csr_matrix(adata.X))."
            )
        return CountRows(matrix, backed=True, columns=columns)
    if not sp.issparse(matrix):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
    elif not isinstance(matrix, sp.csr_matrix):
        matrix = sp.csr_matrix(matrix)
    return CountRows(matrix, columns=columns)


def read_backed(path: str | Path) -> ad.AnnData:
    """Open an h5ad with anndata's backed reader: obs and var in memory, X on disk.

    Raises
    ------
    InputError
        When the path is missing or not an .h5ad file.
    """
    from cellsmith.data.io import read_h5ad

    path = Path(path)
    if path.suffix != ".h5ad":
        raise InputError(f"--backed reads an existing .h5ad file; got {path}.")
    adata = read_h5ad(path, backed=True)
    adata.uns["cellsmith"] = {"source": str(path), "backed": True}
    return adata


def shuffled_row_batches(
    counts: CountRows,
    rows: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    block_rows: int = BLOCK_ROWS,
    buffer_blocks: int = BUFFER_BLOCKS,
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Mini-batches ``(row indices, their counts)`` of the rows ``rows`` for one epoch.

    In memory: one permutation of ``rows`` (a function of ``(seed, epoch)``), each batch gathered
    when taken. Backed: the row blocks are visited in a shuffled order, ``buffer_blocks`` blocks at
    a time are read (contiguous reads) and their selected rows shuffled together, so memory holds
    one buffer. ``shuffle=False`` keeps file order (validation, prediction).
    """
    rows = np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    if not counts.backed:
        order = rng.permutation(rows) if shuffle else rows
        for start in range(0, order.size, batch_size):
            index = order[start : start + batch_size]
            yield index, counts.take(index)
        return
    wanted = np.zeros(counts.n_rows, dtype=bool)
    wanted[rows] = True
    starts = np.arange(0, counts.n_rows, block_rows)
    starts = rng.permutation(starts) if shuffle else starts
    for first in range(0, starts.size, buffer_blocks):
        parts, index = [], []
        for start in np.sort(starts[first : first + buffer_blocks]):
            stop = min(start + block_rows, counts.n_rows)
            keep = np.flatnonzero(wanted[start:stop])
            if keep.size:
                parts.append(counts.read(start, stop)[keep])
                index.append(start + keep)
        if not parts:
            continue
        buffer, index = sp.vstack(parts, format="csr"), np.concatenate(index)
        order = rng.permutation(index.size) if shuffle else np.arange(index.size)
        for start in range(0, order.size, batch_size):
            pick = order[start : start + batch_size]
            yield index[pick], buffer[pick]
