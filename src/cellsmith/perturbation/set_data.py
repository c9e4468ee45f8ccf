"""Pairs of (control set, perturbed set) drawn from a screen, as torch batches.

Each item is one training perturbation (a set of targets) in one context: ``set_size`` control cells of that
context and ``set_size`` real perturbed cells. A perturbation with fewer cells than the set
size is sampled with replacement (logged once); only the rows of a batch are densified.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cellsmith._logging import logger
from cellsmith.errors import InputError
from cellsmith.perturbation.screen import Screen
from cellsmith.perturbation.set_module import NO_TARGET


class SetPairs(torch.utils.data.Dataset):
    """``n_items`` (controls, perturbed, target) set pairs from the cells ``rows`` of a screen.

    Parameters
    ----------
    screen
        The screen in the model's gene space.
    rows
        Cells to draw from (e.g. the training cells).
    target_rows
        A perturbation label -> its targets' rows in the model's target table.
    set_size
        Cells per set.
    n_items
        Items per epoch.
    seed
        Draws are reproducible; with ``fixed=True`` every pass draws the same items
        (validation), otherwise every pass draws new ones.
    """

    def __init__(
        self, screen: Screen, rows: np.ndarray, target_rows: Callable[[str], list[int]], *, set_size: int,
        n_items: int, seed: int, fixed: bool = False,
    ):
        self.x = screen.x
        self.set_size, self.n_items, self.seed, self.fixed = set_size, n_items, seed, fixed
        self._rng = np.random.default_rng(seed)
        labels, contexts = screen.labels[rows], screen.contexts[rows]
        is_control = labels == screen.control_label
        self.controls = {c: rows[is_control & (contexts == c)] for c in np.unique(contexts[is_control])}
        self.pairs: list[tuple[list[int], np.ndarray, np.ndarray]] = []
        small, no_controls = [], []
        for target in sorted(set(labels[~is_control])):
            for context in np.unique(contexts[labels == target]):
                cells = rows[(labels == target) & (contexts == context)]
                if context not in self.controls:
                    no_controls.append(f"{target} in {context}")
                    continue
                if cells.size < set_size:
                    small.append(f"{target} in {context}: {cells.size}")
                self.pairs.append((target_rows(target), self.controls[context], cells))
        if no_controls:
            logger.warning("no control cells in the same context, not used: %s", ", ".join(no_controls))
        if small and not fixed:
            logger.warning(
                "%d perturbation sets have fewer cells than the set size %d and are sampled with "
                "replacement (%s)", len(small), set_size, ", ".join(small),
            )
        if not self.pairs:
            raise InputError(
                "no (perturbation, context) pair has both perturbed and control cells; check "
                "the context key and the control label."
            )

    def __len__(self) -> int:
        return self.n_items

    def _draw(self, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(pool, self.set_size, replace=pool.size < self.set_size)

    def __getitems__(self, items: list[int]) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, items[0]]) if self.fixed else self._rng
        which = [self.pairs[i % len(self.pairs) if self.fixed else rng.integers(len(self.pairs))] for i in items]
        control_rows = np.concatenate([self._draw(c, rng) for _, c, _ in which])
        perturbed_rows = np.concatenate([self._draw(p, rng) for _, _, p in which])
        shape = (len(items), self.set_size, self.x.shape[1])
        width = max(len(t) for t, _, _ in which)
        targets = [t + [NO_TARGET] * (width - len(t)) for t, _, _ in which]
        return {
            "controls": torch.from_numpy(self.x[control_rows].toarray().reshape(shape)),
            "perturbed": torch.from_numpy(self.x[perturbed_rows].toarray().reshape(shape)),
            "target": torch.tensor(targets, dtype=torch.long),  # (B, K)
        }
