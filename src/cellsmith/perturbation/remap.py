"""Put cells of any source into the model's gene space, batch by batch from sparse rows.

The bug this prevents: gene ``i`` of a pretrained model meaning one gene in pretraining and
another in fine-tuning. Every source (pretraining files, the screen, control cells at
prediction time) is mapped by gene *name* into one :class:`~cellsmith.data.GeneSpace`:
source genes outside the space are dropped, space genes absent from a source are zero-filled
and flagged in a mask so that losses ignore them. Library-size normalisation uses every gene
of the source (as log1p(CP10k) is defined on the whole cell), then columns are moved.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from cellsmith._logging import logger
from cellsmith.data import GeneSpace
from cellsmith.data.normalize import log1p_normalize
from cellsmith.data.rows import CountRows, shuffled_row_batches
from cellsmith.errors import GeneSpaceError
from cellsmith.nn.batches import dense_batch
from cellsmith.scvi.batches import process_rank, shard


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

    def transform(self, counts, *, rows: np.ndarray | None = None, block_rows: int = 4096) -> sp.csr_matrix:
        """:meth:`__call__` over a whole matrix (any in-memory matrix, or :class:`CountRows`, backed
        included), block by block: the result stays sparse and only one block of raw counts is
        converted at a time.

        Parameters
        ----------
        rows
            Boolean mask of the rows to keep (all when None), applied block by block.
        """
        counts = counts if isinstance(counts, CountRows) else CountRows(counts)
        blocks = [
            self(block if rows is None else block[rows[start : start + block.shape[0]]])
            for start, block in counts.blocks(block_rows)
        ]
        return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(self.space)), dtype=np.float32)


@dataclass
class _Source:
    counts: CountRows
    remap: GeneRemap

    def rows(self, rows: np.ndarray) -> sp.csr_matrix:
        return self.remap(self.counts.take(rows))


class RemappedCells(torch.utils.data.Dataset):
    """Cells of one or more raw-count sources as a torch dataset in one gene space.

    Indexing with a list of rows (what a ``DataLoader`` does through ``__getitems__``) returns
    one batch ``{"x": (B, G) float32 log1p(CP10k), "observed": (B, G) bool}``; only the rows
    of the batch are densified. :meth:`batches` streams an epoch of such batches read by row
    blocks (:func:`~cellsmith.data.rows.shuffled_row_batches`), which is how sources opened
    backed are trained on. With ``cache=True`` every source is remapped once, block by block,
    and kept in memory (sparse).

    Parameters
    ----------
    sources
        ``[(name, raw counts (cells x source genes), source gene names), ...]``; counts are any
        in-memory matrix or :class:`~cellsmith.data.rows.CountRows` (backed included).
    space
        The gene space.
    cache
        Keep the remapped rows in memory (sparse): the remapping is done once, not per batch.
    """

    def __init__(
        self,
        sources: Sequence[tuple[str, sp.spmatrix | np.ndarray | CountRows, Sequence[str]]],
        space: GeneSpace,
        *,
        cache: bool = False,
    ):
        self.space = space
        self._sources = [
            _Source(counts if isinstance(counts, CountRows) else CountRows(sp.csr_matrix(counts)),
                    GeneRemap(space, names, name=name))
            for name, counts, names in sources
        ]
        sizes = [s.counts.n_rows for s in self._sources]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._remapped = [CountRows(s.remap.transform(s.counts)) for s in self._sources] if cache else None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def mapped_per_source(self) -> dict[str, int]:
        return {s.remap.name: s.remap.n_mapped for s in self._sources}

    def _source_rows(self, k: int, rows: np.ndarray) -> sp.csr_matrix:
        """Remapped rows ``rows`` (local indices) of source ``k``."""
        return self._remapped[k].take(rows) if self._remapped is not None else self._sources[k].rows(rows)

    def _batch(self, x: sp.csr_matrix, source_of: np.ndarray) -> dict[str, torch.Tensor]:
        observed = np.stack([self._sources[k].remap.mask for k in source_of])
        return {"x": dense_batch(x), "observed": torch.from_numpy(observed)}

    def __getitems__(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """Remapped rows (global indices), grouped by source then put back in order."""
        rows = np.asarray(rows, dtype=np.int64)
        source_of = np.searchsorted(self._offsets, rows, side="right") - 1
        parts, order = [], []
        for k in np.unique(source_of):
            at = np.flatnonzero(source_of == k)
            parts.append(self._source_rows(k, rows[at] - self._offsets[k]))
            order.append(at)
        x = sp.vstack(parts, format="csr")[np.argsort(np.concatenate(order))]
        return self._batch(x, source_of)

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([row])
        return {key: value[0] for key, value in batch.items()}

    def batches(
        self, rows: np.ndarray, *, batch_size: int, seed: int, epoch: int, shuffle: bool = True
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of batches of the global rows ``rows``, read by row blocks.

        Each source's rows come from :func:`~cellsmith.data.rows.shuffled_row_batches` (in memory:
        a seeded permutation; backed: shuffled row blocks within a buffer); the sources' batches
        are interleaved in a seeded random order weighted by what each has left (in order
        without ``shuffle``). Every row of ``rows`` is in exactly one batch.
        """
        rows = np.asarray(rows, dtype=np.int64)
        streams, left = [], []
        for k, source in enumerate(self._sources):
            local = rows[(rows >= self._offsets[k]) & (rows < self._offsets[k + 1])] - self._offsets[k]
            if local.size:
                counts = self._remapped[k] if self._remapped is not None else source.counts
                streams.append((k, shuffled_row_batches(
                    counts, local, batch_size=batch_size, seed=seed, epoch=epoch, shuffle=shuffle
                )))
                left.append(local.size)
        rng = np.random.default_rng([seed, epoch, len(self._sources)])
        left = np.asarray(left, dtype=np.float64)
        while left.sum() > 0:
            pick = int(rng.choice(left.size, p=left / left.sum())) if shuffle else int(np.flatnonzero(left)[0])
            k, stream = streams[pick]
            _, block = next(stream)
            left[pick] -= block.shape[0]
            x = block if self._remapped is not None else self._sources[k].remap(block)
            yield self._batch(x, np.full(block.shape[0], k))

    def gene_moments(self, *, block_rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Per-gene mean and standard deviation over the cells that measure the gene
        (computed block by block); genes never measured get mean 0, sd 1."""
        total = np.zeros(len(self.space))
        squares = np.zeros(len(self.space))
        n = np.zeros(len(self.space))
        for source in self._sources:
            for _, counts in source.counts.blocks(block_rows):
                block = source.remap(counts)
                total += np.asarray(block.sum(axis=0)).ravel()
                squares += np.asarray(block.multiply(block).sum(axis=0)).ravel()
                n += source.remap.mask * block.shape[0]
        mean = np.divide(total, n, out=np.zeros_like(total), where=n > 0)
        var = np.divide(squares, n, out=np.ones_like(total), where=n > 0) - mean**2
        sd = np.sqrt(np.clip(var, 0.0, None))
        return mean.astype(np.float32), np.where(sd > 1e-6, sd, 1.0).astype(np.float32)


class EpochBatches(torch.utils.data.IterableDataset):
    """:meth:`RemappedCells.batches` of ``rows`` as a torch dataset: every ``iter()`` (one per
    training epoch) is the next epoch, reshuffled from ``(seed, epoch)``. In a multi-device run
    each process takes its share of every global batch (``rows[rank::world]``), so the averaged
    gradient is that of the global batch."""

    def __init__(self, cells: RemappedCells, rows: np.ndarray, *, batch_size: int, seed: int, shuffle: bool):
        self.cells, self.rows = cells, rows
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.epoch = 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        rank, world = process_rank()
        for batch in self.cells.batches(
            self.rows, batch_size=self.batch_size, seed=self.seed, epoch=epoch, shuffle=self.shuffle
        ):
            if world > 1:
                mine = torch.from_numpy(shard(np.arange(batch["x"].shape[0]), rank, world))
                batch = {key: value[mine] for key, value in batch.items()}
            yield batch


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` for datasets whose items are already whole batches."""
    return batch
