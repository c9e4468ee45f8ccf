"""Splits, queries and libraries: stratified, reproducible, and scoring equal to a loop."""

import numpy as np
import pytest

from cellsmith.errors import InputError
from cellsmith.retrieval import QuerySpec, RetrievalWarning, build_library, build_queries, score, split_cells


def _labels():
    return np.array(["a"] * 40 + ["b"] * 30 + ["ctrl"] * 50 + ["tiny"] * 4)


def test_split_is_stratified_disjoint_and_reproducible():
    with pytest.warns(RetrievalWarning, match=r"skipped: tiny \(4 cells\)"):
        split = split_cells(_labels(), seed=42, test_fraction=0.3, val_fraction=0.1, min_cells=10)
    assert split.candidates == ("a", "b", "ctrl") and split.skipped == {"tiny": 4}
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(map(len, parts)) == 120 and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert np.bincount(split.codes[split.test]).tolist() == [12, 9, 15]
    with pytest.warns(RetrievalWarning):
        again = split_cells(_labels(), seed=42, min_cells=10)
        other = split_cells(_labels(), seed=43, min_cells=10)
    np.testing.assert_array_equal(split.test, again.test)
    assert not np.array_equal(split.test, other.test)


def test_too_few_candidates_is_an_error():
    with pytest.warns(RetrievalWarning), pytest.raises(InputError, match="two or more candidates"):
        split_cells(np.array(["a"] * 20 + ["b"] * 3), seed=0, min_cells=10)


def test_query_specs():
    assert QuerySpec.parse("cell").name == "cell"
    assert QuerySpec.parse("pseudobulk:50").size == 50
    for bad in ("bulk", "pseudobulk:0", "pseudobulk:x"):
        with pytest.raises(InputError, match="pseudobulk:N"):
            QuerySpec.parse(bad)


def test_pseudobulk_queries_average_test_cells_of_one_perturbation():
    with pytest.warns(RetrievalWarning):
        split = split_cells(_labels(), seed=1, min_cells=10)
    names = np.array([f"c{i}" for i in range(len(_labels()))])
    queries = build_queries(split, QuerySpec(5), obs_names=names, seed=1, per_perturbation=3)
    assert queries.members.shape == (9, split.test.size)
    np.testing.assert_allclose(np.asarray(queries.members.sum(1)).ravel(), 1.0)
    test_codes = split.codes[split.test]
    for row, truth in zip(queries.members.toarray(), queries.truth, strict=True):
        assert set(test_codes[row > 0]) == {truth}
    cells = build_queries(split, QuerySpec(1), obs_names=names, seed=1)
    assert cells.ids.tolist() == names[split.test].tolist()


def _loop_scores(kind, emb, codes, queries, k):
    cos = lambda x, y: x @ y / (np.linalg.norm(x) * np.linalg.norm(y))  # noqa: E731
    out = np.zeros((len(queries), codes.max() + 1))
    for i, q in enumerate(queries):
        for c in range(codes.max() + 1):
            members = emb[codes == c]
            if kind == "mean":
                out[i, c] = cos(q, members.mean(0))
            else:
                out[i, c] = np.mean(sorted((cos(q, m) for m in members), reverse=True)[:k])
    return out


@pytest.mark.parametrize("kind", ["mean", "raw_cell"])
def test_library_scores_equal_a_loop(kind):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 5)).astype(np.float32)
    codes = np.repeat(np.arange(4), [10, 20, 12, 18])
    queries = rng.normal(size=(7, 5)).astype(np.float32)
    library = build_library(kind, emb, codes, n_candidates=4, similarity="cosine", seed=0, k=3)
    np.testing.assert_allclose(
        score(library, queries), _loop_scores(kind, emb, codes, queries, 3), rtol=1e-4, atol=1e-5
    )


def test_bootstrap_library_scores_best_of_its_centroids():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(40, 4)).astype(np.float32)
    codes = np.repeat(np.arange(2), 20)
    library = build_library("bootstrap", emb, codes, n_candidates=2, similarity="dot", seed=0, n_bootstrap=6)
    assert library.entries.shape == (12, 4)
    queries = rng.normal(size=(5, 4)).astype(np.float32)
    sims = queries @ library.entries.T
    np.testing.assert_allclose(
        score(library, queries), np.stack([sims[:, :6].max(1), sims[:, 6:].max(1)], 1), rtol=1e-6
    )


def test_class_library_ranks_by_class_probability():
    proba = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], dtype=np.float32)
    codes = np.array([0, 1, 2, 0, 1, 2])
    train = np.random.default_rng(0).dirichlet(np.ones(3), 6).astype(np.float32)
    library = build_library("class", train, codes, n_candidates=3, similarity="dot", seed=0)
    np.testing.assert_array_equal(score(library, proba), proba)
    with pytest.raises(InputError, match="class-probability embeddings"):
        build_library("class", np.zeros((6, 5)), codes, n_candidates=3, similarity="dot", seed=0)


def test_unknown_library_is_an_error():
    with pytest.raises(InputError, match="mean, bootstrap, raw_cell, class"):
        build_library("median", np.zeros((2, 2)), np.array([0, 1]), n_candidates=2, similarity="dot", seed=0)
