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
        return {
            part: np.isin(obs_names, np.asarray(getattr(self, f"{part}_cells"), dtype=object))
            for part in ("train", "val", "test")
        }


def _take(rows: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``rows`` and cut off ``fraction`` of them (at least one when possible)."""
    rows = rng.permutation(rows)
    n = min(len(rows) - 1, max(1, int(round(fraction * len(rows))))) if len(rows) > 1 else 0
    return rows[n:], rows[:n]


def split_screen(
    screen: Screen, *, mode: str, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1
) -> Split:
    """Split a screen; the same seed gives the same split.

    Raises
    ------
    InputError
        On an unknown mode, or fewer than two perturbations for ``heldout-perturbations``.
    """
    if mode not in SPLIT_MODES:
        raise InputError(f"unknown split '{mode}'; use one of {', '.join(SPLIT_MODES)}.")
    rng = np.random.default_rng(seed)
    targets = screen.targets
    if mode == "heldout-perturbations":
        if len(targets) < 2:
            raise InputError(
                f"held-out perturbations need at least 2 perturbations; the screen has {len(targets)}."
            )
        train_targets, test_targets = (sorted(t) for t in _take(np.array(targets), test_fraction, rng))
    else:
        train_targets, test_targets = list(targets), list(targets)
    train, val, test = [], [], []
    for label in [screen.control_label, *targets]:
        rows = screen.rows(label)
        if label in test_targets and label not in train_targets:
            test.append(rows)
            continue
        rest, held = _take(rows, test_fraction, rng)
        fit, check = _take(rest, val_fraction, rng) if val_fraction > 0 else (rest, rest[:0])
        train.append(fit)
        val.append(check)
        test.append(held)

    def names(parts: list[np.ndarray]) -> list[str]:
        return sorted(screen.obs_names[np.concatenate(parts)].tolist())

    return Split(mode, seed, list(train_targets), list(test_targets), names(train), names(val), names(test))
