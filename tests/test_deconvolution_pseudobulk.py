import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellsmith.data import simulate
from cellsmith.data.pseudobulk import check_type_sizes, membership_matrix, mix_counts, pseudobulk, stratified_split
from cellsmith.data.splits import split_indices
from cellsmith.errors import CellsmithDeprecationWarning, InputError, ScaleError


def _two_type_reference():
    """Type A cells are all [1, 0, 3], type B cells all [0, 2, 2]: sums are known exactly."""
    x = np.array([[1, 0, 3]] * 30 + [[0, 2, 2]] * 20, dtype=np.float32)
    obs = pd.DataFrame({"cell_type": ["A"] * 30 + ["B"] * 20}, index=[f"c{i}" for i in range(50)])
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))


def test_pseudobulk_sums_counts_then_cpm_and_truth_is_exact():
    bulk = pseudobulk(_two_type_reference(), 200, cells_per_sample=40, seed=0)
    props = bulk.obsm["proportions"]
    assert list(props.columns) == ["A", "B"]
    n_a, n_b = props["A"].to_numpy() * 40, props["B"].to_numpy() * 40
    assert np.allclose(n_a, np.round(n_a)) and np.allclose(n_a + n_b, 40)
    counts = n_a[:, None] * [1, 0, 3] + n_b[:, None] * [0, 2, 2]
    expected = counts / counts.sum(1, keepdims=True) * 1e6
    np.testing.assert_allclose(bulk.X, expected, rtol=1e-5)
    assert bulk.uns["pseudobulk"]["params"]["cells_per_sample"] == 40


def test_pseudobulk_is_seeded_and_sparse_samples_lack_types(small_cells):
    a = pseudobulk(small_cells, 300, cells_per_sample=50, sparse_fraction=0.5, seed=1)
    b = pseudobulk(small_cells, 300, cells_per_sample=50, sparse_fraction=0.5, seed=1)
    c = pseudobulk(small_cells, 300, cells_per_sample=50, sparse_fraction=0.5, seed=2)
    assert np.array_equal(a.X, b.X) and not np.array_equal(a.X, c.X)
    has_absent = (a.obsm["proportions"] == 0).any(axis=1).mean()
    assert 0.35 < has_absent < 0.75
    dense = pseudobulk(small_cells, 300, cells_per_sample=50, sparse_fraction=0.0, seed=1)
    assert (dense.obsm["proportions"] == 0).any(axis=1).mean() < 0.1


def test_draws_only_from_the_given_cells():
    reference = _two_type_reference()
    only_a = np.arange(30)
    bulk = pseudobulk(reference, 20, cells=only_a, cells_per_sample=10, cell_types=["A"], seed=0)
    np.testing.assert_allclose(bulk.X, np.tile([0.25e6, 0.0, 0.75e6], (20, 1)), rtol=1e-6)


def test_simulate_bulk_and_pseudobulk_share_one_sampler(small_cells):
    counts_bulk = simulate.bulk(small_cells, 30, cells_per_sample=80, seed=4)
    labels = small_cells.obs["cell_type"].astype(str).to_numpy()
    mixed = mix_counts(small_cells.X, labels, 30, cells_per_sample=80, seed=4)
    np.testing.assert_array_equal(counts_bulk.X, mixed.counts)
    cpm_bulk = pseudobulk(small_cells, 30, cells_per_sample=80, seed=4)
    np.testing.assert_allclose(cpm_bulk.X, mixed.counts / mixed.counts.sum(1, keepdims=True) * 1e6, rtol=1e-5)
    np.testing.assert_array_equal(cpm_bulk.obsm["proportions"].to_numpy(), mixed.proportions)
    as_counts = pseudobulk(small_cells, 30, cells_per_sample=80, scale="counts", seed=4)
    np.testing.assert_array_equal(as_counts.X, counts_bulk.X)
    assert list(counts_bulk.obs_names[:2]) == ["bulk0", "bulk1"]
    assert list(counts_bulk.obsm["proportions"].index[:2]) == ["bulk0", "bulk1"]


def test_membership_matrix_counts_draws():
    members = membership_matrix([np.array([0, 2, 2]), np.array([1])], 3).toarray()
    np.testing.assert_array_equal(members, [[1, 0, 2], [0, 1, 0]])
    assert simulate.membership_matrix is membership_matrix  # importable where 0.1 had it


def test_validation_split_is_disjoint_and_keeps_every_type():
    labels = np.array(["a"] * 50 + ["b"] * 7 + ["c"] * 2)
    parts = split_indices(labels.size, {"validation": 0.2}, seed=0, groups=labels)
    first, second = parts["train"], parts["validation"]
    assert np.intersect1d(first, second).size == 0 and first.size + second.size == labels.size
    for side in (first, second):
        assert set(labels[side]) == {"a", "b", "c"}
    assert (labels[second] == "a").sum() == 10
    again = split_indices(labels.size, {"validation": 0.2}, seed=0, groups=labels)
    assert np.array_equal(again["validation"], second)
    with pytest.warns(CellsmithDeprecationWarning, match="split_indices"):
        old = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(old[0], first) and np.array_equal(old[1], second)


def test_type_sizes_warn_and_refuse(caplog):
    with caplog.at_level(logging.WARNING, logger="cellsmith"):
        assert check_type_sizes(np.array(["a"] * 20 + ["b"] * 5)) == ["a", "b"]
    assert "fewer than 10 cells" in caplog.text and "'b': 5" in caplog.text
    with pytest.raises(InputError, match="fewer than 2 cells.*'b': 1"):
        check_type_sizes(np.array(["a"] * 20 + ["b"]))


def test_pseudobulk_refuses_bad_reference(small_cells):
    with pytest.raises(InputError, match="no obs column 'celltype'"):
        pseudobulk(small_cells, 5, cell_type_key="celltype")
    logged = small_cells.copy()
    logged.X = np.log1p(logged.X.toarray() / 7.0)
    with pytest.raises(ScaleError, match="must hold raw counts"):
        pseudobulk(logged, 5)
