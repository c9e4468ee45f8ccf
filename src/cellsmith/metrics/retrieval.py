"""Retrieval metrics: pure, vectorised functions of a score matrix and the true candidates.

Every function takes ``scores`` (n_queries x n_candidates, higher = more similar) and ``truth``
(n_queries integer candidate indices). The rank of the truth is pessimistic under ties: a
candidate scoring exactly as high as the truth counts as ranked above it, so a constant score
matrix earns no credit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from cellsmith.errors import InputError
from cellsmith.metrics.registry import MetricRegistry

RETRIEVAL = MetricRegistry("retrieval")


def _check(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    truth = np.asarray(truth, dtype=np.int64)
    if scores.ndim != 2 or truth.shape != (scores.shape[0],):
        raise InputError(
            f"scores must be (n_queries, n_candidates) and truth (n_queries,); got {scores.shape} and {truth.shape}."
        )
    if truth.size and (truth.min() < 0 or truth.max() >= scores.shape[1]):
        raise InputError(f"truth indices must lie in [0, {scores.shape[1]}); got {truth.min()}..{truth.max()}.")
    return scores, truth


def truth_ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of the true candidate of each query (ties count against the truth)."""
    scores, truth = _check(scores, truth)
    rows = np.arange(scores.shape[0])
    truth_score = scores[rows, truth][:, None]
    at_least = (scores >= truth_score).sum(axis=1)
    return at_least.astype(np.int64)  # includes the truth itself, so it is already 1-based


def top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the best candidate and the margin between the two best scores, per query."""
    scores = np.asarray(scores)
    if scores.shape[1] < 2:
        return np.zeros(scores.shape[0], dtype=np.int64), np.zeros(scores.shape[0])
    top1 = scores.argmax(axis=1)
    two = np.partition(scores, scores.shape[1] - 2, axis=1)[:, -2:]
    return top1, (two[:, 1] - two[:, 0]).astype(np.float64)


def _hit(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(ranks <= k))


def _mrr(ranks: np.ndarray) -> float:
    return float(np.mean(1.0 / ranks))


def _ndcg(ranks: np.ndarray, k: int) -> float:
    # One relevant candidate: the ideal DCG is 1.
    return float(np.mean(np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)))


@RETRIEVAL.register("exact_hit@k")
def exact_hit_at_k(scores: np.ndarray, truth: np.ndarray, k: int = 1) -> float:
    """Fraction of queries whose truth is among the ``k`` best-scored candidates."""
    return _hit(truth_ranks(scores, truth), k)


@RETRIEVAL.register("mrr")
def mean_reciprocal_rank(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean of 1 / rank of the truth."""
    return _mrr(truth_ranks(scores, truth))


@RETRIEVAL.register("ndcg@k")
def ndcg_at_k(scores: np.ndarray, truth: np.ndarray, k: int = 5) -> float:
    """nDCG@k with one relevant candidate: 1 / log2(rank + 1) when rank <= k, else 0."""
    return _ndcg(truth_ranks(scores, truth), k)


@RETRIEVAL.register("confidence_auc")
def confidence_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC of the top-two margin for predicting whether the top-1 candidate is right.

    NaN when every top-1 is right or every one is wrong (the AUC is undefined).
    """
    scores, truth = _check(scores, truth)
    top1, margin = top_two(scores)
    correct = top1 == truth
    if correct.all() or not correct.any():
        return float("nan")
    return float(roc_auc_score(correct, margin))


@RETRIEVAL.register("partial_hit@1")
def partial_hit_at_1(scores: np.ndarray, truth: np.ndarray, gene_sets: Sequence[frozenset[str]]) -> float:
    """Fraction of queries whose top-1 candidate shares at least one gene with the truth.

    ``gene_sets[i]`` is the set of genes perturbed by candidate ``i`` (empty for the control);
    the control counts as a partial hit only for a control query.
    """
    scores, truth = _check(scores, truth)
    if len(gene_sets) != scores.shape[1]:
        raise InputError(f"gene_sets has {len(gene_sets)} entries for {scores.shape[1]} candidates.")
    n = len(gene_sets)
    shares = np.array([[bool(a & b) or a == b for b in gene_sets] for a in gene_sets]).reshape(n, n)
    return float(np.mean(shares[scores.argmax(axis=1), truth]))


def retrieval_metrics(
    scores: np.ndarray, truth: np.ndarray, *, gene_sets: Sequence[frozenset[str]] | None = None
) -> dict[str, float]:
    """The metrics of one table row: exact_hit@1/@5, mrr, ndcg@5, confidence_auc
    (and partial_hit@1 when ``gene_sets`` is given), ranking the scores once."""
    scores, truth = _check(scores, truth)
    ranks = truth_ranks(scores, truth)
    row = {
        "exact_hit@1": _hit(ranks, 1),
        "exact_hit@5": _hit(ranks, 5),
        "mrr": _mrr(ranks),
        "ndcg@5": _ndcg(ranks, 5),
        "confidence_auc": confidence_auc(scores, truth),
    }
    if gene_sets is not None:
        row["partial_hit@1"] = partial_hit_at_1(scores, truth, gene_sets)
    return row
