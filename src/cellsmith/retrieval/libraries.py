"""Libraries of perturbation entries built from training-cell embeddings, and scoring.

``mean``: one centroid per perturbation. ``bootstrap``: ``n_bootstrap`` centroids of random
subsets per perturbation; a perturbation scores the best of them. ``raw_cell``: every training
cell is an entry; a perturbation scores the mean similarity of its ``k`` most similar cells.
``class``: for embedders whose embedding is a class-probability vector (logreg), one one-hot
entry per candidate, so a candidate scores the query's probability of its class.
All are one vectorised rule: a candidate's score is the mean of its top-``k`` entry
similarities (``k`` = 1 except for raw_cell).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cellsmith.errors import InputError
from cellsmith.retrieval.embedders import Similarity

#: Upper bound on query x candidate x entry similarities held at once while scoring.
_MAX_BLOCK = 2**25


@dataclass(frozen=True, eq=False)
class Library:
    """Entries (rows) and the candidate each belongs to.

    Attributes
    ----------
    entry_index
        (n_candidates, max entries per candidate) positions into ``entries``, -1 = padding.
    k
        A candidate's score is the mean of its ``k`` best entry similarities.
    """

    kind: str
    entries: np.ndarray
    entry_index: np.ndarray
    similarity: Similarity
    k: int

    @property
    def n_candidates(self) -> int:
        return self.entry_index.shape[0]


def _centroids(embeddings: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    return np.stack([embeddings[g].mean(axis=0) for g in groups])


def _mean(embeddings, groups, rng, options):
    return _centroids(embeddings, groups), [np.array([i]) for i in range(len(groups))], 1


def _bootstrap(embeddings, groups, rng, options):
    n, fraction = options["n_bootstrap"], options["bootstrap_fraction"]
    subsets = [
        rng.choice(g, size=max(1, round(fraction * g.size)), replace=False) for g in groups for _ in range(n)
    ]
    return _centroids(embeddings, subsets), [np.arange(i * n, (i + 1) * n) for i in range(len(groups))], 1


def _raw_cell(embeddings, groups, rng, options):
    k = min(options["k"], min(g.size for g in groups))
    return embeddings[np.concatenate(groups)], np.split(np.arange(sum(g.size for g in groups)), np.cumsum([g.size for g in groups])[:-1]), k


def _class(embeddings, groups, rng, options):
    if embeddings.shape[1] != len(groups):
        raise InputError(
            f"the class library needs class-probability embeddings (one column per candidate); got "
            f"{embeddings.shape[1]} columns for {len(groups)} candidates. Use it with logreg."
        )
    return np.eye(len(groups), dtype=np.float32), [np.array([i]) for i in range(len(groups))], 1


_BUILDERS: dict[str, Callable] = {"mean": _mean, "bootstrap": _bootstrap, "raw_cell": _raw_cell, "class": _class}
LIBRARY_KINDS = tuple(_BUILDERS)


def build_library(
    kind: str,
    embeddings: np.ndarray,
    codes: np.ndarray,
    *,
    n_candidates: int,
    similarity: Similarity,
    seed: int,
    n_bootstrap: int = 10,
    bootstrap_fraction: float = 0.5,
    k: int = 10,
) -> Library:
    """Build a library from training-cell ``embeddings`` with candidate indices ``codes``."""
    if kind not in _BUILDERS:
        raise InputError(f"unknown library '{kind}'; choose from {', '.join(LIBRARY_KINDS)}.")
    groups = [np.flatnonzero(codes == c) for c in range(n_candidates)]
    empty = [c for c, g in enumerate(groups) if g.size == 0]
    if empty:
        raise InputError(f"candidates {empty} have no training cells to build a library entry from.")
    rng = np.random.default_rng(seed)
    options = {"n_bootstrap": n_bootstrap, "bootstrap_fraction": bootstrap_fraction, "k": k}
    entries, members, k_used = _BUILDERS[kind](np.asarray(embeddings, dtype=np.float32), groups, rng, options)
    width = max(m.size for m in members)
    index = np.full((n_candidates, width), -1, dtype=np.int64)
    for c, m in enumerate(members):
        index[c, : m.size] = m
    return Library(kind, _prepare(entries, similarity), index, similarity, k_used)


def _prepare(x: np.ndarray, similarity: Similarity) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if similarity == "cosine":
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def score(library: Library, queries: np.ndarray) -> np.ndarray:
    """Scores (n_queries x n_candidates, float32) of query embeddings against a library."""
    q = _prepare(queries, library.similarity)
    index = library.entry_index
    padded = index < 0
    n_per_query = index.size
    chunk = max(1, _MAX_BLOCK // max(n_per_query, 1))
    out = np.empty((q.shape[0], library.n_candidates), dtype=np.float32)
    for start in range(0, q.shape[0], chunk):
        sims = q[start : start + chunk] @ library.entries.T  # (c, n_entries)
        if index.shape[1] == 1:
            out[start : start + chunk] = sims[:, index[:, 0]]
            continue
        grouped = sims[:, np.where(padded, 0, index)]  # (c, n_candidates, width)
        grouped[:, padded] = -np.inf
        if library.k == 1:
            out[start : start + chunk] = grouped.max(axis=2)
        else:
            top = -np.partition(-grouped, library.k - 1, axis=2)[:, :, : library.k]
            out[start : start + chunk] = top.mean(axis=2)
    return out
