"""Metrics of reconstructed (or predicted) cells against real cells: pure functions.

Inputs are arrays with cells in rows. ``real`` and ``pred`` expression matrices are on the same
scale (log1p(CP10k) from :func:`cellsmith.data.normalize.log1p_normalize`); ``embedding`` is a
joint embedding (e.g. PCA) of real and reconstructed cells.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

from cellsmith.metrics import correlation
from cellsmith.metrics.registry import MetricRegistry

REGISTRY = MetricRegistry("reconstruction")


@REGISTRY.register("knn_mixing")
def knn_mixing(embedding: np.ndarray, is_real: np.ndarray, *, k: int = 15) -> float:
    """How well reconstructed cells mix with real ones in a joint embedding.

    For each reconstructed cell, the share of its ``k`` nearest neighbours (itself excluded)
    that are real, divided by the share expected when the two sides are indistinguishable
    (``n_real / (n - 1)``) and clipped to 1: 1 = indistinguishable, 0 = fully separate.
    """
    is_real = np.asarray(is_real, dtype=bool)
    n = is_real.size
    if is_real.all() or not is_real.any():
        return float("nan")
    k = min(k, n - 1)
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(embedding).kneighbors(
        embedding[~is_real], return_distance=False
    )[:, 1:]
    observed = is_real[neighbours].mean()
    expected = is_real.sum() / (n - 1)
    return float(min(1.0, observed / expected))


@REGISTRY.register("mean_pearson")
def mean_pearson(pred: np.ndarray, real: np.ndarray) -> float:
    """Pearson r of the per-gene means of predicted and real cells."""
    return correlation.pearson(np.asarray(pred).mean(0), np.asarray(real).mean(0))


@REGISTRY.register("zero_fraction_agreement")
def zero_fraction_agreement(zero_probability: np.ndarray, real_counts: np.ndarray) -> float:
    """``1 - mean over genes |predicted - real share of zero counts|`` (1 = perfect).

    The predicted share of a gene is the mean over cells of the model's P(count = 0).
    """
    predicted = np.asarray(zero_probability).mean(0)
    observed = (np.asarray(real_counts) == 0).mean(0)
    return float(1.0 - np.abs(predicted - observed).mean())


def _subsample(x: np.ndarray, max_cells: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= max_cells else x[rng.choice(len(x), max_cells, replace=False)]


@REGISTRY.register("energy_distance")
def energy_distance(a: np.ndarray, b: np.ndarray, *, max_cells: int = 1000, seed: int = 0) -> float:
    """Energy distance ``2 E|A-B| - E|A-A'| - E|B-B'|`` between two sets of cells (rows); each
    side is subsampled to ``max_cells`` (seeded) to bound the cost."""
    rng = np.random.default_rng(seed)
    a, b = _subsample(np.asarray(a), max_cells, rng), _subsample(np.asarray(b), max_cells, rng)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean())


@REGISTRY.register("real_halves_energy_distance")
def real_halves_energy_distance(real: np.ndarray, *, max_cells: int = 1000, seed: int = 0) -> float:
    """Energy distance between two random halves of the real cells: the floor that a perfect
    reconstruction reaches (sampling noise alone)."""
    order = np.random.default_rng(seed).permutation(len(real))
    half = len(real) // 2
    return energy_distance(real[order[:half]], real[order[half:]], max_cells=max_cells, seed=seed)


@REGISTRY.register("always_zero_mean")
def always_zero_mean(pred_counts: np.ndarray, always_zero: np.ndarray) -> float:
    """Mean predicted expression (count scale) on always-zero genes (boolean gene mask)."""
    mask = np.asarray(always_zero, dtype=bool)
    return float(np.asarray(pred_counts)[:, mask].mean()) if mask.any() else float("nan")


def reconstruction_metrics(
    *,
    real_log: np.ndarray,
    pred_log: np.ndarray,
    real_counts: np.ndarray,
    pred_counts: np.ndarray,
    zero_probability: np.ndarray,
    embedding_real: np.ndarray,
    embedding_pred: np.ndarray,
    always_zero: np.ndarray,
    k: int = 15,
    seed: int = 0,
) -> dict[str, float]:
    """All metrics for one set of paired real / reconstructed cells (rows paired).

    ``*_log`` on active genes, ``*_counts`` and ``zero_probability`` on all genes, embeddings
    the joint PCA coordinates of each side.
    """
    joint = np.vstack([embedding_real, embedding_pred])
    is_real = np.r_[np.ones(len(embedding_real), bool), np.zeros(len(embedding_pred), bool)]
    return {
        "n_cells": float(len(real_log)),
        "knn_mixing": knn_mixing(joint, is_real, k=k),
        "mean_pearson": mean_pearson(pred_log, real_log),
        "zero_fraction_agreement": zero_fraction_agreement(zero_probability, real_counts),
        "energy_distance": energy_distance(embedding_real, embedding_pred, seed=seed),
        "energy_distance_real_halves": real_halves_energy_distance(embedding_real, seed=seed),
        "always_zero_mean": always_zero_mean(pred_counts, always_zero),
    }


def metrics_by_group(
    groups: Mapping[str, np.ndarray], **arrays: np.ndarray
) -> pd.DataFrame:
    """:func:`reconstruction_metrics` overall and within every level of every grouping.

    Parameters
    ----------
    groups
        ``{key: (n_cells,) labels}`` (e.g. donor, timepoint).
    arrays
        The keyword arguments of :func:`reconstruction_metrics` (row-paired arrays) and
        optionally ``k`` / ``seed``.

    Returns
    -------
    DataFrame indexed by (key, level) with one column per metric; the first row is
    ``("overall", "all")``.
    """
    options = {name: arrays.pop(name) for name in ("k", "seed", "always_zero") if name in arrays}
    rows = {("overall", "all"): reconstruction_metrics(**arrays, **options)}
    for key, labels in groups.items():
        labels = np.asarray(labels).astype(str)
        for level in sorted(set(labels)):
            mask = labels == level
            rows[(key, level)] = reconstruction_metrics(
                **{name: value[mask] for name, value in arrays.items()}, **options
            )
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["key", "level"])
    return frame
