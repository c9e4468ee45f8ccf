"""Seeded train / validation / test splits of a screen, saved with the run.

``heldout-perturbations``: a share of the targets is unseen in fine-tuning (all their cells are
test cells). ``heldout-cells``: a share of the cells of every perturbation is held out. In both
a share of the control cells is held out as well: they are the inputs from which the test
perturbations are predicted and the controls against which they are scored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cellsmith.data.splits import split_indices
from cellsmith.errors import InputError
from cellsmith.perturbation.screen import Screen

SplitMode = Literal["heldout-perturbations", "heldout-cells"]
SPLIT_MODES: tuple[str, ...] = ("heldout-perturbations", "heldout-cells")


@dataclass
class Split:
    """Which cells train, validate and test a model (cell names of the screen)."""

    mode: str
    seed: int
    train_targets: list[str]
    test_targets: list[str]
    train_cells: list[str]
    val_cells: list[str]
    test_cells: list[str]

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: str | Path) -> Split:
        return cls(**json.loads(Path(path).read_text()))

    def masks(self, obs_names: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean masks over ``obs_names`` for ``train``, ``val`` and ``test``."""
        # A hash look-up: np.isin on object arrays compares every pair (hours at 300,000 cells).
        names = pd.Index(obs_names)
        return {part: names.isin(getattr(self, f"{part}_cells")) for part in ("train", "val", "test")}


def split_screen(
    screen: Screen, *, mode: str, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1
) -> Split:
    """Split a screen through :func:`cellsmith.data.splits.split_indices`; the same seed gives
    the same split.

    Targets held out (``heldout-perturbations``) give all their cells to the test part. The
    cells of every other label (controls included) are split per label: ``test_fraction`` of
    them are test cells and ``val_fraction`` of the rest are validation cells.

    Raises
    ------
    InputError
        On an unknown mode, or fewer than two perturbations for ``heldout-perturbations``.
    """
    if mode not in SPLIT_MODES:
        raise InputError(f"unknown split '{mode}'; use one of {', '.join(SPLIT_MODES)}.")
    targets = np.array(screen.targets, dtype=object)
    if mode == "heldout-perturbations":
        if len(targets) < 2:
            raise InputError(
                f"held-out perturbations need at least 2 perturbations; the screen has {len(targets)}."
            )
        by_target = split_indices(len(targets), {"test": test_fraction}, seed=seed)
        train_targets, test_targets = sorted(targets[by_target["train"]]), sorted(targets[by_target["test"]])
    else:
        train_targets, test_targets = list(targets), list(targets)
    unseen = np.isin(screen.labels, sorted(set(test_targets) - set(train_targets)))
    seen = np.flatnonzero(~unseen)
    # val_fraction is a share of what the test cut leaves, as a share of all cells of a label.
    by_cell = split_indices(
        seen.size, {"test": test_fraction, "val": val_fraction * (1.0 - test_fraction)},
        seed=seed, groups=screen.labels[seen],
    )

    def names(rows: np.ndarray) -> list[str]:
        return sorted(screen.obs_names[rows].tolist())

    return Split(
        mode, seed, list(train_targets), list(test_targets), names(seen[by_cell["train"]]),
        names(seen[by_cell["val"]]), names(np.concatenate([seen[by_cell["test"]], np.flatnonzero(unseen)])),
    )
