"""Libraries of perturbation entries built from training-cell embeddings, and scoring.

``mean``: one centroid per perturbation. ``bootstrap``: ``n_bootstrap`` centroids of random
subsets per perturbation; a perturbation scores the best of them. ``raw_cell``: every training
cell is an entry; a perturbation scores the mean similarity of its ``k`` most similar cells.
``class``: for embedders whose embedding is a class-probability vector (logreg), one one-hot
entry per candidate, so a candidate scores the query's probability of its class.
All are one rule: a candidate's score is the mean of its top-``k`` entry similarities (``k`` = 1
except for raw_cell). Entries are stored candidate after candidate, so a candidate's
similarities are a contiguous slice of a query's row: scoring gathers nothing and pads nothing
(a large control group does not widen every candidate), and holds at most ``_MAX_BLOCK``
similarities at once.
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
    """Entries (rows), candidate after candidate.

    Attributes
    ----------
    offsets
        (n_candidates + 1,) candidate ``c`` owns entries ``offsets[c]:offsets[c + 1]``.
    k
        A candidate's score is the mean of its ``k`` best entry similarities.
    """

    kind: str
    entries: np.ndarray
    offsets: np.ndarray
    similarity: Similarity
    k: int

    @property
    def n_candidates(self) -> int:
        return self.offsets.size - 1


def _centroids(embeddings: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    return np.stack([embeddings[g].mean(axis=0) for g in groups])


# Each builder returns (entries candidate after candidate, entries per candidate, k).
def _mean(embeddings, groups, rng, options):
    return _centroids(embeddings, groups), np.ones(len(groups), dtype=np.int64), 1


def _bootstrap(embeddings, groups, rng, options):
    n, fraction = options["n_bootstrap"], options["bootstrap_fraction"]
    subsets = [
        rng.choice(g, size=max(1, round(fraction * g.size)), replace=False) for g in groups for _ in range(n)
    ]
    return _centroids(embeddings, subsets), np.full(len(groups), n, dtype=np.int64), 1


def _raw_cell(embeddings, groups, rng, options):
    k = min(options["k"], min(g.size for g in groups))
    return embeddings[np.concatenate(groups)], np.array([g.size for g in groups], dtype=np.int64), k


def _class(embeddings, groups, rng, options):
    if embeddings.shape[1] != len(groups):
        raise InputError(
            f"the class library needs class-probability embeddings (one column per candidate); got "
            f"{embeddings.shape[1]} columns for {len(groups)} candidates. Use it with logreg."
        )
    return np.eye(len(groups), dtype=np.float32), np.ones(len(groups), dtype=np.int64), 1


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
    entries, sizes, k_used = _BUILDERS[kind](np.asarray(embeddings, dtype=np.float32), groups, rng, options)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    return Library(kind, _prepare(entries, similarity), offsets, similarity, k_used)


def _prepare(x: np.ndarray, similarity: Similarity) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if similarity == "cosine":
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def _top_k_mean(sims: np.ndarray, k: int, axis: int) -> np.ndarray:
    if k == 1:
        return sims.max(axis=axis)
    return -np.partition(-sims, k - 1, axis=axis).take(np.arange(k), axis=axis).mean(axis=axis)


def score(library: Library, queries: np.ndarray) -> np.ndarray:
    """Scores (n_queries x n_candidates, float32) of query embeddings against a library."""
    q = _prepare(queries, library.similarity)
    offsets, k = library.offsets, library.k
    sizes = np.diff(offsets)
    width = int(sizes[0]) if (sizes == sizes[0]).all() else None
    chunk = max(1, _MAX_BLOCK // max(library.entries.shape[0], 1))
    out = np.empty((q.shape[0], library.n_candidates), dtype=np.float32)
    for start in range(0, q.shape[0], chunk):
        sims = q[start : start + chunk] @ library.entries.T  # (c, n_entries), candidate after candidate
        if width is not None:  # mean, bootstrap, class: every candidate has as many entries
            out[start : start + chunk] = _top_k_mean(sims.reshape(sims.shape[0], -1, width), k, axis=2)
            continue
        for c in range(library.n_candidates):
            out[start : start + chunk, c] = _top_k_mean(sims[:, offsets[c] : offsets[c + 1]], k, axis=1)
    return out
