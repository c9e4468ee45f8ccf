"""Seeded train / validation / test splits of a screen, saved with the run.

``heldout-perturbations``: a share of the perturbations is unseen in fine-tuning (all their cells
are test cells). ``heldout-combinations``: double perturbations whose singles are all seen in
training are held out (GEARS' "seen 2/2"); when the screen has four singles or more, a share of
the singles is held out too, with every double that contains one of them ("seen 1/2", "seen
0/2"). ``heldout-cells``: a share of the cells of every perturbation is held out. In all of them
a share of the control cells is held out as well: they are the inputs from which the test
perturbations are predicted and the controls against which they are scored.

Only perturbations that can be predicted unseen are held out: each of their targets has an
embedding (``embedded``) or is a target of a training perturbation.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd

from cellsmith._logging import logger
from cellsmith.data.splits import split_indices
from cellsmith.errors import InputError
from cellsmith.perturbation.screen import Screen

SplitMode = Literal["heldout-perturbations", "heldout-combinations", "heldout-cells"]
SPLIT_MODES: tuple[str, ...] = get_args(SplitMode)
#: Fewer singles than this: heldout-combinations holds out doubles only.
MIN_SINGLES_TO_HOLD_OUT = 4


@dataclass
class Split:
    """Which cells train, validate and test a model (cell names of the screen)."""

    mode: SplitMode
    seed: int
    train_targets: list[str]
    test_targets: list[str]
    train_cells: list[str]
    val_cells: list[str]
    test_cells: list[str]
    #: Test perturbation -> its setting ("unseen single", "seen 2/2", "seen 1/2", "seen 0/2",
    #: "seen single" / "seen double" for heldout-cells); empty in splits of cellsmith <= 0.2.
    categories: dict[str, str] = field(default_factory=dict)

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


def _pick(items: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded share of ``items`` (at least one of two or more, never all)."""
    if len(items) < 2:
        return []
    return [items[i] for i in split_indices(len(items), {"test": fraction}, seed=seed)["test"]]


def _category(targets: tuple[str, ...], train_singles: set[str], seen: bool) -> str:
    kind = "single" if len(targets) == 1 else "double"
    if seen:
        return f"seen {kind}"
    if kind == "single":
        return "unseen single"
    return f"seen {sum(t in train_singles for t in targets)}/{len(targets)}"


def _held_out(screen: Screen, mode: str, embedded: set[str], fraction: float, seed: int) -> list[str]:
    """The perturbations whose cells are all test cells."""
    sets = screen.target_sets
    predictable = [p for p in screen.targets if set(sets[p]) <= embedded]
    if mode == "heldout-perturbations":
        if len(screen.targets) < 2:
            raise InputError(
                f"held-out perturbations need at least 2 perturbations; the screen has {len(screen.targets)}."
            )
        return _pick(predictable, fraction, seed)
    singles = [p for p in screen.targets if len(sets[p]) == 1]
    doubles = [p for p in screen.targets if len(sets[p]) > 1]
    if not doubles:
        raise InputError(
            "--split heldout-combinations needs double perturbations (labels such as A+B or A_B); the "
            f"screen has {len(singles)} single ones only. Use --split heldout-perturbations."
        )
    unseen = set()
    if len(singles) >= MIN_SINGLES_TO_HOLD_OUT:
        unseen = {sets[p][0] for p in _pick([p for p in singles if p in predictable], fraction, seed)}
    with_unseen = [p for p in screen.targets if set(sets[p]) & unseen]
    trained_singles = {sets[p][0] for p in singles} - unseen
    both_seen = [p for p in doubles if set(sets[p]) <= trained_singles]
    return sorted({*with_unseen, *_pick(both_seen, fraction, seed + 1)})


def split_screen(
    screen: Screen,
    *,
    mode: str,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    embedded: Collection[str] | None = None,
) -> Split:
    """Split a screen through :func:`cellsmith.data.splits.split_indices`; the same seed gives
    the same split.

    Perturbations held out (see the module docstring) give all their cells to the test part. The
    cells of every other label (controls included) are split per label: ``test_fraction`` of
    them are test cells and ``val_fraction`` of the rest are validation cells. ``embedded``: the
    genes with an embedding (default: every target).

    Raises
    ------
    InputError
        On an unknown mode, fewer than two perturbations for ``heldout-perturbations``, no
        double perturbation for ``heldout-combinations``.
    """
    if mode not in SPLIT_MODES:
        raise InputError(f"unknown split '{mode}'; use one of {', '.join(SPLIT_MODES)}.")
    sets = screen.target_sets
    embedded = set(embedded) if embedded is not None else {g for p in screen.targets for g in sets[p]}
    if mode == "heldout-cells":
        train_targets, test_targets, excluded = list(screen.targets), list(screen.targets), []
    else:
        held = _held_out(screen, mode, embedded, test_fraction, seed)
        train_targets = [p for p in screen.targets if p not in held]
        trained = embedded | {g for p in train_targets for g in sets[p]}
        excluded = [p for p in held if not set(sets[p]) <= trained]
        test_targets = [p for p in held if p not in excluded]
        if not test_targets:
            raise InputError(
                f"no perturbation of the screen can be held out for {mode}: held-out perturbations need "
                "targets with an embedding (pretrain on data that measure them) or seen in training."
            )
        if excluded:
            logger.warning(
                "left out of the split (a target has no embedding and is in no training perturbation): %s",
                ", ".join(excluded),
            )
    train_singles = {sets[p][0] for p in train_targets if len(sets[p]) == 1}
    categories = {p: _category(sets[p], train_singles, mode == "heldout-cells") for p in test_targets}
    unseen = np.isin(screen.labels, sorted(set(test_targets) - set(train_targets)))
    seen = np.flatnonzero(~unseen & ~np.isin(screen.labels, excluded))
    # val_fraction is a share of what the test cut leaves, as a share of all cells of a label.
    by_cell = split_indices(
        seen.size,
        {"test": test_fraction, "val": val_fraction * (1.0 - test_fraction)},
        seed=seed,
        groups=screen.labels[seen],
    )

    def names(rows: np.ndarray) -> list[str]:
        return sorted(screen.obs_names[rows].tolist())

    return Split(
        mode, seed, list(train_targets), list(test_targets), names(seen[by_cell["train"]]),
        names(seen[by_cell["val"]]), names(np.concatenate([seen[by_cell["test"]], np.flatnonzero(unseen)])),
        categories,
    )
