"""Mini-batches as index slices, and control/perturbed pairing, both functions of the seed.

Training reads rows of in-memory tensors by index: no DataLoader workers and no per-item
``__getitem__``, so the per-step overhead is a few tensor slices. The batch order of epoch
``e`` depends only on ``(seed, e)``, so a run resumed from a checkpoint replays exactly the
batches an uninterrupted run would have seen.

Under DDP (several processes) every process draws the same global batches and takes its own
share of each, so the averaged gradient is that of the global batch, as in one process.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist

from cellsmith.errors import InputError


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
