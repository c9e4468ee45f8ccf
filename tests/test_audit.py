import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cellsmith.data import audit, audit_matrix, normalize, recover_counts, require_counts, require_linear
from cellsmith.errors import InputError, ScaleError


def _as(adata, x):
    return ad.AnnData(X=x, obs=adata.obs, var=adata.var)


@pytest.mark.parametrize("sparse", [True, False])
def test_four_scales_are_told_apart(small_cells, sparse):
    counts = small_cells.X if sparse else small_cells.X.toarray()
    lognorm = normalize.log1p_normalize(counts)
    dense_log = lognorm.toarray() if sp.issparse(lognorm) else lognorm
    expected = {
        "counts": counts,
        "normalized": normalize.normalize_total(counts),
        "log1p": lognorm,
        "scaled": dense_log - dense_log.mean(axis=0),
    }
    for scale, x in expected.items():
        assert audit_matrix(x).scale == scale


def test_log1p_verdict_names_the_target_sum(small_cells):
    found = audit_matrix(normalize.log1p_normalize(small_cells.X, target_sum=1e4))
    assert "rows sum to 1e4 after expm1" in found.verdict
    assert found.expm1_row_sum == pytest.approx(1e4, rel=1e-3)
    cpm_found = audit_matrix(normalize.cpm(small_cells.X))
    assert "rows sum to 1e6" in cpm_found.verdict


def test_log1p_of_raw_counts_is_recognised(small_cells):
    found = audit_matrix(normalize.log1p(small_cells.X))
    assert found.scale == "log1p" and "expm1 gives integers" in found.verdict


def test_evidence_fields(small_cells):
    x = small_cells.X.toarray()
    x[0, 0] = np.nan
    adata = _as(small_cells, x)
    adata.var_names = ["GENE00000", "GENE00000"] + list(small_cells.var_names[2:])
    report = audit(adata)
    m = report.matrices["X"]
    assert m.n_nan == 1
    assert m.n_all_zero_genes == len(small_cells.uns["simulation"]["always_zero_genes"])
    assert report.duplicated_genes == ["GENE00000"]
    assert 0 < m.sparsity < 1
    assert m.row_sum_quantiles["q00"] <= m.row_sum_quantiles["q50"] <= m.row_sum_quantiles["q100"]
    assert "duplicated gene names: 1" in str(report)


def test_audit_covers_layers_and_raw(small_cells):
    adata = small_cells.copy()
    adata.layers["counts"] = adata.X.copy()
    adata.raw = adata.copy()
    adata.X = normalize.log1p_normalize(adata.X)
    report = audit(adata)
    assert {k: v.scale for k, v in report.matrices.items()} == {
        "X": "log1p",
        "layers/counts": "counts",
        "raw": "counts",
    }
    assert report.counts_sources() == ["layers/counts", "raw"]


def test_require_counts_points_to_the_counts_layer(small_cells):
    adata = small_cells.copy()
    adata.layers["counts"] = adata.X.copy()
    adata.X = normalize.log1p_normalize(adata.X)
    with pytest.raises(ScaleError) as err:
        require_counts(adata)
    message = str(err.value)
    assert "LOG1P" in message and "layer='counts'" in message and "--counts-layer counts" in message
    assert require_counts(adata, layer="counts") is adata.layers["counts"]
    with pytest.raises(InputError, match="no layer 'nope'"):
        require_counts(adata, layer="nope")


def test_require_counts_refuses_nan(small_cells):
    x = small_cells.X.toarray()
    x[3, 3] = np.nan
    with pytest.raises(ScaleError):
        require_counts(_as(small_cells, x))


def test_require_linear_refuses_log(small_cells):
    assert require_linear(_as(small_cells, normalize.cpm(small_cells.X)))[1] == "normalized"
    with pytest.raises(ScaleError, match="linear only in count/CPM space"):
        require_linear(_as(small_cells, normalize.log1p_normalize(small_cells.X)))


def test_recover_counts_is_exact(small_cells):
    adata = _as(small_cells, normalize.log1p_normalize(small_cells.X))
    adata.obs["total_counts"] = np.asarray(small_cells.X.sum(axis=1)).ravel()
    recovered = recover_counts(adata, total_counts_key="total_counts")
    assert sp.issparse(recovered)
    np.testing.assert_array_equal(recovered.toarray(), small_cells.X.toarray())


def test_recover_counts_refuses_inconsistent_totals(small_cells):
    adata = _as(small_cells, normalize.log1p_normalize(small_cells.X))
    adata.obs["total_counts"] = np.asarray(small_cells.X.sum(axis=1)).ravel() * 1.37
    with pytest.raises(ScaleError, match="non-integers"):
        recover_counts(adata, total_counts_key="total_counts")


def test_audit_of_large_sparse_does_not_densify(monkeypatch):
    rng = np.random.default_rng(0)
    n, g, per = 20_000, 5_000, 50
    indices = rng.integers(0, g, n * per)
    x = sp.csr_matrix(
        (rng.integers(1, 20, n * per).astype(np.float32), indices, np.arange(0, n * per + 1, per)),
        shape=(n, g),
    )

    def refuse(*args, **kwargs):
        raise AssertionError("densified")

    monkeypatch.setattr(sp.csr_matrix, "toarray", refuse)
    monkeypatch.setattr(sp.csr_matrix, "todense", refuse)
    assert audit_matrix(x).scale == "counts"


@pytest.mark.parametrize(
    "transform, scale",
    [(None, "counts"), ("normalize", "normalized"), ("log1p", "log1p"), ("scale", "scaled")],
)
def test_verdicts_on_sorted_pbmc(shared_file, transform, scale):
    import scanpy as sc

    adata = ad.read_h5ad(shared_file("pbmc_sorted_zheng2017.h5ad"))
    if transform in ("normalize", "log1p", "scale"):
        sc.pp.normalize_total(adata, target_sum=1e4)
    if transform in ("log1p", "scale"):
        sc.pp.log1p(adata)
    if transform == "scale":
        sc.pp.scale(adata)
    report = audit(adata)
    assert report.scale == scale
    if transform == "log1p":
        assert "rows sum to 1e4 after expm1" in report.matrices["X"].verdict


def test_tpm_bulk_is_normalized(shared_file):
    adata = ad.read_h5ad(shared_file("GSE127813_whole_blood_bulk.h5ad"))
    assert audit(adata).scale == "normalized"
