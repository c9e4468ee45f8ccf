"""Feature rows taken by index and densified one batch at a time.

Embedders hand their learned heads *rows*, not matrices: anything with a ``shape`` and a
``take(positions)`` that returns those rows (a dense array, a tensor or a CSR block). Masked
screen counts and their log1p(CP10k) are such rows (:class:`cellsmith.retrieval.masking.ScreenCounts`),
computed from the counts (in memory or on disk) only when taken, so a 300,000 x 18,000 screen
is never densified whole: a batch is densified when it is taken (:func:`dense_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch

from cellsmith.data.rows import BLOCK_ROWS
from cellsmith.nn.batches import dense_batch


@runtime_checkable
class FeatureRows(Protocol):
    """Rows x features, read by row positions."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def take(self, positions: np.ndarray) -> Any:
        """Rows ``positions`` (in that order) as an array, a tensor or a CSR matrix."""


@dataclass(frozen=True, eq=False)
class MatrixRows:
    """A dense array, a tensor or a sparse matrix as :class:`FeatureRows`."""

    matrix: Any

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    def take(self, positions: np.ndarray) -> Any:
        positions = np.asarray(positions, dtype=np.int64)
        if isinstance(self.matrix, torch.Tensor):
            return self.matrix[torch.from_numpy(positions)]
        return self.matrix[positions]


@dataclass(frozen=True, eq=False)
class MappedRows:
    """Rows of ``source`` passed through ``fn`` when taken (e.g. normalisation of count rows)."""

    source: FeatureRows
    fn: Callable[[Any], Any]
    n_columns: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.source.shape[0], self.n_columns

    def take(self, positions: np.ndarray) -> Any:
        return self.fn(self.source.take(positions))


@dataclass(frozen=True, eq=False)
class SubsetRows:
    """The rows ``positions`` of ``source``."""

    source: FeatureRows
    positions: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.positions.size, self.source.shape[1]

    def take(self, positions: np.ndarray) -> Any:
        return self.source.take(self.positions[np.asarray(positions, dtype=np.int64)])


def as_feature_rows(features: Any) -> FeatureRows:
    """``features`` as :class:`FeatureRows` (arrays, tensors and sparse matrices are wrapped)."""
    if isinstance(features, (np.ndarray, torch.Tensor)) or sp.issparse(features):
        return MatrixRows(sp.csr_matrix(features) if sp.issparse(features) else features)
    if isinstance(features, FeatureRows):
        return features
    raise TypeError(
        f"features must be an array, a tensor, a sparse matrix or rows with take(); got {type(features).__name__}"
    )


def dense_rows(block: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """A taken block of rows as a dense float32 tensor (sparse blocks densified on ``device``)."""
    if sp.issparse(block):
        return dense_batch(block, device)
    if isinstance(block, torch.Tensor):
        return block.float()
    # np.require copies only read-only or other-typed arrays (torch cannot wrap read-only memory).
    return torch.from_numpy(np.require(block, dtype=np.float32, requirements="W"))


def row_blocks(rows: FeatureRows, block_rows: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(start, rows start:start + block_rows)`` over all rows, in order (``BLOCK_ROWS`` rows
    per block by default)."""
    n, block_rows = rows.shape[0], block_rows or BLOCK_ROWS
    for start in range(0, n, block_rows):
        yield start, rows.take(np.arange(start, min(start + block_rows, n)))
