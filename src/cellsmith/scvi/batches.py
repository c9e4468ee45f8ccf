"""Mini-batches of count rows, and control/perturbed pairing, both functions of the seed.

In memory (:class:`EpochBatches` + :class:`CountBatches`), training gathers the CSR rows of each
batch by index: no DataLoader workers and no per-item ``__getitem__``. The batch order of epoch
``e`` depends only on ``(seed, e)``, so a run resumed from a checkpoint replays exactly the
batches an uninterrupted run would have seen.

Backed (:class:`BlockBatches`), the rows come from
:func:`~cellsmith.data.rows.shuffled_row_batches`: row blocks of the file in a seeded shuffled
order, rows shuffled within a buffer of blocks, re-cut into full batches. Only one buffer is
in memory; the batches differ from the in-memory ones by their order only.

Under DDP (several processes) every process draws the same global batches and takes its own
share of each, so the averaged gradient is that of the global batch, as in one process.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from cellsmith.data.rows import CountRows, shuffled_row_batches
from cellsmith.errors import InputError

#: A batch as the training plan receives it: target and source cell indices, the targets' CSR
#: count rows and the sources' (None when every cell is its own source).
Batch = tuple[torch.Tensor, torch.Tensor, sp.csr_matrix, sp.csr_matrix | None]


#: The pseudo-epoch of fixed (validation, evaluation) pairings.
FIXED_EPOCH = 2**31 - 1


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch: a function of ``(seed, epoch)`` only."""
    return np.random.default_rng([seed, epoch])


def process_rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's rows of one global batch: ``rows[rank::world]``.

    A batch of fewer rows than processes (the last one, at most) is first repeated to ``world``
    rows, as torch's DistributedSampler pads, so that no process gets an empty batch.
    """
    if world == 1:
        return rows
    if rows.size < world:
        rows = np.resize(rows, world)
    return rows[rank::world]


class ControlPairing:
    """Pairs each cell with the source cell the encoder sees.

    Control cells (and every cell outside perturbation mode) are their own source; a perturbed
    cell gets a random control cell of the same group (batch, plus the match key when set),
    drawn from ``pool`` (the cells of the same split).

    Parameters
    ----------
    is_control
        (N,) True for control cells; all True outside perturbation mode.
    group
        (N,) integer group of each cell.
    pool
        Indices of the cells that may serve as sources.
    """

    def __init__(self, is_control: np.ndarray, group: np.ndarray, pool: np.ndarray):
        self.is_control = is_control
        self.group = group
        controls = pool[is_control[pool]]
        if not is_control.all() and controls.size == 0:
            raise InputError("perturbation mode needs control cells, but this split has none.")
        self.controls_of = {g: controls[group[controls] == g] for g in np.unique(group)}
        self.fallback = controls

    def sources(self, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Source index of each target index (itself for controls)."""
        sources = targets.copy()
        perturbed = ~self.is_control[targets]
        for g in np.unique(self.group[targets[perturbed]]):
            rows = np.flatnonzero(perturbed & (self.group[targets] == g))
            pool = self.controls_of.get(g)
            pool = pool if pool is not None and pool.size else self.fallback
            sources[rows] = pool[rng.integers(0, pool.size, rows.size)]
        return sources


class EpochBatches:
    """An iterable of ``(targets, sources)`` index tensors for one epoch.

    Lightning calls ``sampler.set_epoch(epoch)`` before each epoch (also after resuming), which
    selects the permutation and the pairing of that epoch. In a distributed run (read when
    iterating) each process yields its :func:`shard` of every global batch of ``batch_size``
    cells; all processes yield the same number of batches.
    """

    batch_sampler = None  # read by Lightning, which treats the object like a DataLoader

    def __init__(
        self,
        indices: np.ndarray,
        pairing: ControlPairing,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
    ):
        self.indices = np.asarray(indices)
        self.pairing = pairing
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    @property
    def sampler(self) -> EpochBatches:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.indices.size // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Validation (shuffle=False) uses one fixed pairing, so its loss is comparable across epochs.
        rng = epoch_rng(self.seed, self.epoch if self.shuffle else FIXED_EPOCH)
        targets = rng.permutation(self.indices) if self.shuffle else self.indices
        sources = self.pairing.sources(targets, rng)
        rank, world = process_rank()
        for start in range(0, targets.size, self.batch_size):
            rows = shard(np.arange(start, min(start + self.batch_size, targets.size)), rank, world)
            yield torch.from_numpy(targets[rows]), torch.from_numpy(sources[rows])


class CountBatches:
    """The batches of an :class:`EpochBatches` with the CSR count rows of their cells (in memory).

    Lightning sees this object as the data loader; ``sampler`` is the :class:`EpochBatches`, so
    ``set_epoch`` reaches it.
    """

    batch_sampler = None

    def __init__(self, batches: EpochBatches, counts: CountRows):
        self.batches = batches
        self.counts = counts

    @property
    def sampler(self) -> EpochBatches:
        return self.batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        for targets, sources in self.batches:
            same = torch.equal(targets, sources)
            source_rows = None if same else self.counts.take(sources.numpy())
            yield targets, sources, self.counts.take(targets.numpy()), source_rows


class BlockBatches:
    """Batches of the rows ``indices`` of a backed count matrix, read block by block.

    Every cell is its own source (perturbation mode needs random control cells from the whole
    data and is trained in memory). Each epoch yields ``ceil(len(indices) / batch_size)``
    batches, as in memory: the shuffled row blocks are re-cut into full batches.
    """

    batch_sampler = None

    def __init__(self, counts: CountRows, indices: np.ndarray, *, batch_size: int, seed: int, shuffle: bool = True):
        self.counts = counts
        self.indices = np.asarray(indices)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    @property
    def sampler(self) -> BlockBatches:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.indices.size // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        parts = shuffled_row_batches(
            self.counts,
            self.indices,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch if self.shuffle else FIXED_EPOCH,
            shuffle=self.shuffle,
        )
        rank, world = process_rank()
        for rows, counts in full_batches(parts, self.batch_size):
            pick = shard(np.arange(rows.size), rank, world)
            targets = torch.from_numpy(rows[pick])
            yield targets, targets, counts[pick], None


def full_batches(
    parts: Iterator[tuple[np.ndarray, sp.csr_matrix]], batch_size: int
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Re-cut ``(rows, counts)`` parts of any sizes into batches of ``batch_size`` rows (the last
    one may be smaller), keeping their order."""
    rows_held: list[np.ndarray] = []
    counts_held: list[sp.csr_matrix] = []
    held = 0
    for rows, counts in parts:
        while rows.size:
            take = min(batch_size - held, rows.size)
            rows_held.append(rows[:take])
            counts_held.append(counts[:take])
            held += take
            rows, counts = rows[take:], counts[take:]
            if held == batch_size:
                yield _joined(rows_held, counts_held)
                rows_held, counts_held, held = [], [], 0
    if held:
        yield _joined(rows_held, counts_held)


def _joined(rows: list[np.ndarray], counts: list[sp.csr_matrix]) -> tuple[np.ndarray, sp.csr_matrix]:
    if len(rows) == 1:
        return rows[0], counts[0]
    return np.concatenate(rows), sp.vstack(counts, format="csr")
