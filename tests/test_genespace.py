import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cellsmith.data import GeneSpace
from cellsmith.errors import GeneSpaceError


def test_align_round_trips_shuffled_columns(small_cells):
    space = GeneSpace(small_cells.var_names)
    rng = np.random.default_rng(0)
    shuffled = small_cells[:, rng.permutation(small_cells.n_vars)].copy()
    aligned = space.align(shuffled)
    assert list(aligned.var_names) == list(space.names)
    assert sp.issparse(aligned.X)
    np.testing.assert_array_equal(aligned.X.toarray(), small_cells.X.toarray())
    assert aligned.uns["cellsmith"]["missing_genes"] == []
    assert aligned.uns["cellsmith"]["genespace_digest"] == space.digest


def test_align_zero_fills_and_records_missing(small_cells):
    space = GeneSpace(list(small_cells.var_names[:50]) + ["EXTRA1", "EXTRA2"])
    aligned = space.align(small_cells[:, ::-1].copy(), min_overlap=0.5)
    assert aligned.uns["cellsmith"]["missing_genes"] == ["EXTRA1", "EXTRA2"]
    np.testing.assert_array_equal(aligned.X[:, -2:].toarray(), 0)
    np.testing.assert_array_equal(aligned.X[:, :50].toarray(), small_cells.X[:, :50].toarray())
    with pytest.raises(GeneSpaceError, match="absent"):
        space.align(small_cells, missing="error")


def test_align_dense_and_layers(small_cells):
    adata = ad.AnnData(X=small_cells.X.toarray(), obs=small_cells.obs, var=small_cells.var)
    adata.layers["counts"] = small_cells.X.copy()
    space = GeneSpace(list(reversed(small_cells.var_names)))
    aligned = space.align(adata)
    np.testing.assert_array_equal(aligned.X, small_cells.X.toarray()[:, ::-1])
    np.testing.assert_array_equal(aligned.layers["counts"].toarray(), small_cells.X.toarray()[:, ::-1])


def test_align_refuses_low_overlap_with_examples(small_cells):
    space = GeneSpace([f"OTHER{i}" for i in range(80)] + list(small_cells.var_names[:20]))
    with pytest.raises(GeneSpaceError) as err:
        space.align(small_cells)
    message = str(err.value)
    assert "only 20 of the 100 genes" in message and "20.0%" in message and "OTHER0" in message


def test_duplicated_names_are_an_error(small_cells):
    with pytest.raises(GeneSpaceError, match="unique"):
        GeneSpace(["A", "B", "A"])
    adata = small_cells.copy()
    adata.var_names = ["GENE00001"] + list(adata.var_names[1:])
    with pytest.raises(GeneSpaceError, match=r"duplicated gene names \(GENE00001\).*var_names_make_unique"):
        GeneSpace(small_cells.var_names).align(adata)


def test_alias_map_and_json_round_trip(small_cells):
    space = GeneSpace(["MARCHF8", *small_cells.var_names[1:10]])
    adata = small_cells[:, :10].copy()
    adata.var_names = ["MARCH8", *adata.var_names[1:]]
    aligned = space.align(adata, aliases={"MARCH8": "MARCHF8"})
    np.testing.assert_array_equal(aligned.X[:, 0].toarray(), adata.X[:, 0].toarray())
    again = GeneSpace.from_json(space.to_json())
    assert again == space and again.digest == space.digest
    assert GeneSpace(reversed(space.names)).digest != space.digest
