"""Perturbation labels as written in common screens, parsed into gene sets by one function."""

from __future__ import annotations

import re

#: Labels that mean "no perturbation" in common screens (matched case-insensitively).
CONTROL_LABELS = ("non-targeting", "nontargeting", "ctrl", "control", "nt", "safe-targeting")

_SEPARATORS = re.compile(r"[+_]")


def is_control(label: str, control_label: str | None = None) -> bool:
    """Whether ``label`` is the control (``control_label`` if given, else a common name)."""
    if control_label is not None:
        return label == control_label
    return label.strip().lower() in CONTROL_LABELS


def parse_perturbation(label: str, control_label: str | None = None) -> frozenset[str]:
    """The set of perturbed genes in a label; empty for controls.

    Single genes (``"STAT1"``), combinations (``"A+B"``, ``"A_B"``) and half-controls
    (``"A+ctrl"``) are understood; control parts are dropped.

    Examples
    --------
    >>> sorted(parse_perturbation("CEBPA+ctrl"))
    ['CEBPA']
    >>> sorted(parse_perturbation("KLF1_MAP2K6"))
    ['KLF1', 'MAP2K6']
    """
    label = str(label).strip()
    if is_control(label, control_label):
        return frozenset()
    parts = [label] if label and _SEPARATORS.search(label) is None else _SEPARATORS.split(label)
    return frozenset(p for p in parts if p and not is_control(p) and p != control_label)


def perturbed_genes(labels, control_label: str | None = None) -> list[str]:
    """Sorted unique genes perturbed anywhere in ``labels``."""
    genes: set[str] = set()
    for label in set(map(str, labels)):
        genes |= parse_perturbation(label, control_label)
    return sorted(genes)


def perturbation_sets(labels, control_label: str | None = None) -> dict[str, tuple[str, ...]]:
    """``{label: sorted targets}`` of every distinct label (controls map to ``()``).

    Examples
    --------
    >>> perturbation_sets(["A+B", "B", "non-targeting"])
    {'A+B': ('A', 'B'), 'B': ('B',), 'non-targeting': ()}
    """
    return {label: tuple(sorted(parse_perturbation(label, control_label))) for label in sorted(set(map(str, labels)))}
