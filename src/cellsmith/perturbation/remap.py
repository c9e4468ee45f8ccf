"""Put cells of any source into the model's gene space, batch by batch from sparse rows.

The bug this prevents: gene ``i`` of a pretrained model meaning one gene in pretraining and
another in fine-tuning. Every source (pretraining files, the screen, control cells at
prediction time) is mapped by gene *name* into one :class:`~cellsmith.data.GeneSpace`:
source genes outside the space are dropped, space genes absent from a source are zero-filled
and flagged in a mask so that losses ignore them. Library-size normalisation uses every gene
of the source (as log1p(CP10k) is defined on the whole cell), then columns are moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from cellsmith._logging import logger
from cellsmith.data import GeneSpace
from cellsmith.data.normalize import log1p_normalize
from cellsmith.errors import GeneSpaceError


class GeneRemap:
    """Source gene index -> gene-space index, applied to sparse row blocks.

    Parameters
    ----------
    space
        The model's gene space.
    source_names
        Gene names of the source, in its column order.
    name
        The source's name, for logs and errors.
    """

    def __init__(self, space: GeneSpace, source_names: Sequence[str], *, name: str = "source"):
        self.space = space
        self.name = name
        self.source_to_space = space.index_map(list(source_names))  # (n_source,) -1 = dropped
        cols = np.flatnonzero(self.source_to_space >= 0)
        if cols.size == 0:
            raise GeneSpaceError(
                f"none of the {len(source_names):,} genes of {name} is in the gene space "
                f"({len(space)} genes, digest {space.digest}); check that both use gene symbols."
            )
        # (n_source x n_space) selection matrix: moves columns without densifying.
        self._selector = sp.csr_matrix(
            (np.ones(cols.size, dtype=np.float32), (cols, self.source_to_space[cols])),
            shape=(len(source_names), len(space)),
        )
        self.mask = np.zeros(len(space), dtype=bool)  # (n_space,) True = measured in source
        self.mask[self.source_to_space[cols]] = True
        logger.info(
            "%s: %d of its %d genes mapped into the gene space (%d genes, digest %s); %d space "
            "genes absent and masked",
            name, cols.size, len(source_names), len(space), space.digest, int((~self.mask).sum()),
        )

    @property
    def n_mapped(self) -> int:
        return int(self.mask.sum())

    def __call__(self, counts_block) -> sp.csr_matrix:
        """log1p(CP10k) of raw-count rows (normalised over all source genes), in space order."""
        return sp.csr_matrix(log1p_normalize(sp.csr_matrix(counts_block, dtype=np.float32)) @ self._selector)

    def transform(self, counts, *, block_rows: int = 4096) -> sp.csr_matrix:
        """:meth:`__call__` over a whole matrix, block by block (the result stays sparse)."""
        blocks = [self(counts[i : i + block_rows]) for i in range(0, counts.shape[0], block_rows)]
        return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(self.space)))


@dataclass
class _Source:
    counts: sp.csr_matrix
    remap: GeneRemap


class RemappedCells(torch.utils.data.Dataset):
    """Cells of one or more raw-count sources as a torch dataset in one gene space.

    Indexing with a list of rows (what a ``DataLoader`` does through ``__getitems__``) returns
    one batch ``{"x": (B, G) float32 log1p(CP10k), "observed": (B, G) bool}``; only the rows
    of the batch are densified. With ``cache=True`` remapped rows are kept after first use.

    Parameters
    ----------
    sources
        ``[(name, raw counts (cells x source genes), source gene names), ...]``.
    space
        The gene space.
    cache
        Keep remapped rows in memory (sparse) after their first use.
    """

    def __init__(
        self,
        sources: Sequence[tuple[str, sp.spmatrix | np.ndarray, Sequence[str]]],
        space: GeneSpace,
        *,
        cache: bool = False,
    ):
        self.space = space
        self._sources = [
            _Source(sp.csr_matrix(counts), GeneRemap(space, names, name=name))
            for name, counts, names in sources
        ]
        sizes = [s.counts.shape[0] for s in self._sources]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._cache: dict[int, sp.csr_matrix] | None = {} if cache else None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def mapped_per_source(self) -> dict[str, int]:
        return {s.remap.name: s.remap.n_mapped for s in self._sources}

    def _rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Remapped rows (global indices), grouped by source then put back in order."""
        source_of = np.searchsorted(self._offsets, rows, side="right") - 1
        parts, order = [], []
        for k in np.unique(source_of):
            at = np.flatnonzero(source_of == k)
            source = self._sources[k]
            parts.append(source.remap(source.counts[rows[at] - self._offsets[k]]))
            order.append(at)
        return sp.vstack(parts, format="csr")[np.argsort(np.concatenate(order))]

    def __getitems__(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        if self._cache is None:
            x = self._rows(rows)
        else:
            todo = np.array([r for r in rows if int(r) not in self._cache], dtype=np.int64)
            if todo.size:
                fresh = self._rows(todo)
                self._cache.update({int(r): fresh[i] for i, r in enumerate(todo)})
            x = sp.vstack([self._cache[int(r)] for r in rows], format="csr")
        return {"x": torch.from_numpy(x.toarray()), "observed": torch.from_numpy(self._observed(rows))}

    def _observed(self, rows: np.ndarray) -> np.ndarray:
        source_of = np.searchsorted(self._offsets, rows, side="right") - 1
        return np.stack([self._sources[k].remap.mask for k in source_of])

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([row])
        return {key: value[0] for key, value in batch.items()}

    def gene_moments(self, *, block_rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Per-gene mean and standard deviation over the cells that measure the gene
        (computed block by block); genes never measured get mean 0, sd 1."""
        total = np.zeros(len(self.space))
        squares = np.zeros(len(self.space))
        n = np.zeros(len(self.space))
        for source in self._sources:
            for start in range(0, source.counts.shape[0], block_rows):
                block = source.remap(source.counts[start : start + block_rows])
                total += np.asarray(block.sum(axis=0)).ravel()
                squares += np.asarray(block.multiply(block).sum(axis=0)).ravel()
                n += source.remap.mask * block.shape[0]
        mean = np.divide(total, n, out=np.zeros_like(total), where=n > 0)
        var = np.divide(squares, n, out=np.ones_like(total), where=n > 0) - mean**2
        sd = np.sqrt(np.clip(var, 0.0, None))
        return mean.astype(np.float32), np.where(sd > 1e-6, sd, 1.0).astype(np.float32)


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` for datasets whose ``__getitems__`` already returns a whole batch."""
    return batch
