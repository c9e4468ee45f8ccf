"""Cell-level splits within every perturbation, and queries built from held-out cells."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellsmith.data.pseudobulk import membership_matrix
from cellsmith.data.splits import split_indices
from cellsmith.errors import InputError
from cellsmith.retrieval.masking import RetrievalWarning


@dataclass(frozen=True, eq=False)
class Split:
    """Train / validation / test cell indices, stratified by perturbation.

    Attributes
    ----------
    candidates
        Perturbation labels that can be retrieved (sorted; the control included).
    codes
        Per cell, its index in ``candidates`` (-1 for a skipped perturbation).
    skipped
        ``{label: n_cells}`` of perturbations with too few cells to split.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    candidates: tuple[str, ...]
    codes: np.ndarray
    skipped: dict[str, int]


def split_cells(
    labels: Sequence[str],
    *,
    seed: int,
    test_fraction: float = 0.3,
    val_fraction: float = 0.1,
    min_cells: int = 10,
) -> Split:
    """Split the cells of every perturbation into train, validation and test.

    Each perturbation with at least ``min_cells`` cells gives ``round(n * test_fraction)``
    (at least one) test cells, ``round(n * val_fraction)`` (at least one) validation cells and
    the rest (at least one) for training, through :func:`cellsmith.data.splits.split_indices`
    stratified by perturbation. Smaller ones are listed in a warning and left out of the
    candidates.
    """
    if not 0 < test_fraction < 1 or not 0 < val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise InputError(
            f"test_fraction ({test_fraction}) and val_fraction ({val_fraction}) must be in (0, 1) "
            "and sum to less than 1."
        )
    labels = pd.Series(np.asarray(labels, dtype=str))
    sizes = labels.value_counts().sort_index()
    skipped = {str(k): int(v) for k, v in sizes[sizes < max(min_cells, 3)].items()}
    candidates = tuple(str(k) for k in sizes.index if str(k) not in skipped)
    if skipped:
        warnings.warn(
            f"{len(skipped)} perturbation(s) have fewer than {min_cells} cells and cannot be split; "
            "skipped: " + ", ".join(f"{k} ({v} cells)" for k, v in skipped.items()),
            RetrievalWarning,
            stacklevel=2,
        )
    if len(candidates) < 2:
        raise InputError(
            f"only {len(candidates)} perturbation(s) have at least {min_cells} cells; retrieval "
            "needs two or more candidates (lower min_cells or pass a larger screen)."
        )
    codes = pd.Categorical(labels, categories=list(candidates)).codes.astype(np.int64)
    kept = np.flatnonzero(codes >= 0)  # cells of skipped perturbations are in no part
    parts = split_indices(kept.size, {"test": test_fraction, "val": val_fraction}, seed=seed, groups=codes[kept])
    train, val, test = (kept[parts[k]] for k in ("train", "val", "test"))
    return Split(train, val, test, candidates, codes, skipped)


@dataclass(frozen=True)
class QuerySpec:
    """``cell`` (one held-out cell per query) or ``pseudobulk:N`` (the mean embedding of N held-out
    cells of one perturbation; see :func:`build_queries`)."""

    size: int

    @property
    def name(self) -> str:
        return "cell" if self.size == 1 else f"pseudobulk:{self.size}"

    @classmethod
    def parse(cls, text: str) -> QuerySpec:
        text = text.strip()
        if text == "cell":
            return cls(1)
        match = re.fullmatch(r"pseudobulk:(\d+)", text)
        if match is None or int(match.group(1)) < 1:
            raise InputError(f"query '{text}' is not 'cell' or 'pseudobulk:N' with N >= 1 (e.g. pseudobulk:50).")
        return cls(int(match.group(1)))


@dataclass(frozen=True, eq=False)
class Queries:
    """Queries over the test cells.

    Attributes
    ----------
    members
        Sparse (n_queries x n_test_cells) averaging matrix: a query's embedding is
        ``members @ test_cell_embeddings`` (the identity for ``cell`` queries).
    truth
        True candidate index per query.
    ids
        Query names: the cell's obs name, or ``LABEL#pbI`` for pseudo-bulk I of LABEL.
    """

    members: sp.csr_matrix
    truth: np.ndarray
    ids: np.ndarray


def build_queries(
    split: Split, spec: QuerySpec, *, obs_names: Sequence[str], seed: int, per_perturbation: int = 20
) -> Queries:
    """Queries from the test cells: each cell, or ``per_perturbation`` pseudo-bulks per
    perturbation of ``spec.size`` test cells (drawn without replacement when there are enough
    test cells, with replacement otherwise).

    A pseudo-bulk query is the mean of its cells' embeddings, so it lives in the same space as
    the library entries (means of training-cell embeddings). Summing counts first and embedding
    the sum puts queries on another scale than the library: on Papalexi (pca, mean library)
    that costs MRR 0.41 -> 0.17 (see BENCHMARKS.md).
    """
    test_codes = split.codes[split.test]
    if spec.size == 1:
        return Queries(sp.identity(split.test.size, dtype=np.float32, format="csr"), test_codes,
                       np.asarray(obs_names)[split.test])
    rng = np.random.default_rng([seed, spec.size])
    groups, truth, ids = [], [], []
    for code, label in enumerate(split.candidates):
        cells = np.flatnonzero(test_codes == code)
        replace = cells.size < spec.size
        for i in range(per_perturbation):
            groups.append(rng.choice(cells, size=spec.size, replace=replace))
            truth.append(code)
            ids.append(f"{label}#pb{i}")
    members = membership_matrix(groups, split.test.size) / spec.size
    return Queries(sp.csr_matrix(members, dtype=np.float32), np.asarray(truth, dtype=np.int64), np.asarray(ids))
