"""Retrieval metrics against hand-computed values and a per-query loop."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cellsmith.errors import InputError
from cellsmith.metrics.retrieval import (
    RETRIEVAL,
    confidence_auc,
    exact_hit_at_k,
    mean_reciprocal_rank,
    ndcg_at_k,
    partial_hit_at_1,
    retrieval_metrics,
    top_two,
    truth_ranks,
)

SCORES = np.array(
    [
        [0.9, 0.1, 0.0],  # truth 0 -> rank 1
        [0.9, 0.5, 0.1],  # truth 1 -> rank 2
        [0.9, 0.5, 0.1],  # truth 2 -> rank 3
        [0.2, 0.2, 0.1],  # truth 1 tied with 0 -> rank 2 (ties count against the truth)
    ]
)
TRUTH = np.array([0, 1, 2, 1])


def test_ranks_and_metrics_by_hand():
    assert truth_ranks(SCORES, TRUTH).tolist() == [1, 2, 3, 2]
    assert exact_hit_at_k(SCORES, TRUTH, k=1) == 0.25
    assert exact_hit_at_k(SCORES, TRUTH, k=2) == 0.75
    assert mean_reciprocal_rank(SCORES, TRUTH) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    expected_ndcg = (1 + 1 / np.log2(3) + 1 / np.log2(4) + 1 / np.log2(3)) / 4
    assert ndcg_at_k(SCORES, TRUTH, k=5) == pytest.approx(expected_ndcg)
    assert ndcg_at_k(SCORES, TRUTH, k=1) == pytest.approx(0.25)


def test_constant_scores_earn_nothing():
    scores = np.ones((5, 4))
    assert exact_hit_at_k(scores, np.arange(5) % 4, k=1) == 0.0
    assert truth_ranks(scores, np.zeros(5, dtype=int)).tolist() == [4] * 5


def test_vectorised_ranks_match_a_loop():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(300, 40))
    truth = rng.integers(0, 40, 300)
    looped = [1 + int(np.sum(np.delete(row, t) >= row[t])) for row, t in zip(scores, truth, strict=True)]
    assert truth_ranks(scores, truth).tolist() == looped


def test_confidence_auc_is_roc_auc_of_top_two_margin():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(200, 6))
    truth = rng.integers(0, 6, 200)
    top1, margin = top_two(scores)
    sorted_scores = np.sort(scores, axis=1)
    np.testing.assert_allclose(margin, sorted_scores[:, -1] - sorted_scores[:, -2])
    assert confidence_auc(scores, truth) == pytest.approx(roc_auc_score(top1 == truth, margin))
    assert np.isnan(confidence_auc(scores, scores.argmax(1)))  # every top-1 right: undefined


def test_partial_hit_counts_shared_genes():
    sets = [frozenset({"A"}), frozenset({"A", "B"}), frozenset({"C"}), frozenset()]
    scores = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]], dtype=float)
    truth = np.array([0, 1, 2, 3])  # top1 A+B for A: partial; C for A+B: no; ctrl for C: no; ctrl for ctrl: yes
    assert partial_hit_at_1(scores, truth, sets) == 0.5


def test_combined_row_matches_single_functions_and_registry():
    rng = np.random.default_rng(2)
    scores, truth = rng.normal(size=(50, 8)), rng.integers(0, 8, 50)
    row = retrieval_metrics(scores, truth)
    assert list(row) == ["exact_hit@1", "exact_hit@5", "mrr", "ndcg@5", "confidence_auc"]
    assert row["exact_hit@5"] == RETRIEVAL.get("exact_hit@k")(scores, truth, k=5)
    assert row["mrr"] == RETRIEVAL.get("mrr")(scores, truth)
    with pytest.raises(InputError, match="unknown retrieval metric"):
        RETRIEVAL.get("hit@3")


def test_bad_shapes_are_refused():
    with pytest.raises(InputError, match="truth indices"):
        truth_ranks(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(InputError, match="n_queries"):
        truth_ranks(np.zeros((2, 3)), np.array([0]))
