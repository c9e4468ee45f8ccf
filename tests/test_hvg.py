import json

import anndata as ad
import numpy as np

from cellsmith.data import HVGSelection, cross_dataset_hvg, perturbed_genes, simulate


def _check_maps(selection, datasets):
    names = selection.genespace.names
    for key, adata in datasets.items():
        index_map = selection.index_maps[key]
        assert index_map.shape == (adata.n_vars,)
        for source, target in enumerate(index_map):
            if target >= 0:
                assert adata.var_names[source] == names[target]
        assert set(adata.var_names[index_map >= 0]) == set(names)


def test_priority_genes_first_and_maps_agree(small_cells):
    other = simulate.singlecell(400, 300, seed=5)[:, ::-1].copy()
    other = other[:, 20:].copy()  # 20 genes fewer
    datasets = {"a": small_cells, "b": other}
    always_zero = set(small_cells.uns["simulation"]["always_zero_genes"])
    expressed = [g for g in small_cells.var_names[100:] if g not in always_zero]
    dropped_from_b = small_cells.var_names[-1]  # absent from "b": fails the intersection
    priority = [expressed[0], "NOT_A_GENE", dropped_from_b]
    selection = cross_dataset_hvg(datasets, n_top=50, priority_genes=priority)
    assert len(selection.genespace) == 50
    assert selection.priority_genes_included == [expressed[0]]
    assert selection.priority_genes_missing == ["NOT_A_GENE", dropped_from_b]
    assert not always_zero & set(selection.genespace.names)
    _check_maps(selection, datasets)


def test_write_and_read(tmp_path, small_cells):
    selection = cross_dataset_hvg({"x": small_cells}, n_top=40)
    path = selection.write(tmp_path)
    payload = json.loads(path.read_text())
    for key in ["hvg_names", "n_hvgs", "datasets", "x_to_hvg", "priority_genes_included",
                "priority_genes_missing", "params"]:
        assert key in payload
    again = HVGSelection.read(tmp_path)
    assert again.genespace == selection.genespace
    np.testing.assert_array_equal(again.index_maps["x"], selection.index_maps["x"])


def test_dispersion_prefers_variable_genes():
    rng = np.random.default_rng(0)
    means = rng.uniform(5, 20, 400)
    x = rng.poisson(means, (1000, 400)).astype(np.float32)
    # ten genes with the same means but a bimodal (highly dispersed) distribution
    on = rng.random((1000, 10)) < 0.5
    x[:, :10] = rng.poisson(np.where(on, 2 * means[:10], 0.0))
    adata = ad.AnnData(X=x)
    adata.var_names = [f"g{i}" for i in range(400)]
    selection = cross_dataset_hvg({"d": adata}, n_top=10)
    assert set(selection.genespace.names) == {f"g{i}" for i in range(10)}


def test_perturbed_genes_parser():
    labels = ["non-targeting", "A+B", "C_D", "E+ctrl", "F"]
    assert perturbed_genes(labels, "non-targeting") == ["A", "B", "C", "D", "E", "F"]


def test_sorted_pbmc_and_donor_a_keep_priority_genes(shared_file):
    sorted_pbmc = ad.read_h5ad(shared_file("pbmc_sorted_zheng2017.h5ad"))
    donor_a = ad.read_h5ad(shared_file("pbmc_frozen_donorA_zheng2017.h5ad"))
    priority = ["CD3E", "MS4A1", "NKG7", "CD14", "LYZ", "FCGR3A", "GNLY", "IL7R"]
    datasets = {"sorted": sorted_pbmc, "donor_a": donor_a}
    selection = cross_dataset_hvg(datasets, n_top=2000, priority_genes=priority)
    assert selection.priority_genes_missing == []
    assert set(priority) <= set(selection.genespace.names)
    assert len(selection.genespace) == 2000
    _check_maps(selection, datasets)


def test_dispersion_by_blocks_equals_scanpy(small_cells, monkeypatch):
    """The block-wise normalized dispersion is scanpy's (seurat flavor), block size aside."""
    import scanpy as sc
    import scipy.sparse as sp

    from cellsmith.data import hvg
    from cellsmith.data.normalize import log1p_normalize

    counts = sp.csr_matrix(small_cells.X, dtype=np.float32)
    logged = ad.AnnData(X=log1p_normalize(counts))
    expected = sc.pp.highly_variable_genes(logged, flavor="seurat", n_top_genes=None, inplace=False)
    expected = expected["dispersions_norm"].fillna(-np.inf).to_numpy()
    monkeypatch.setattr(hvg, "_DISPERSION_BLOCK", 37)  # many blocks, the last one short
    got = hvg._normalized_dispersion(counts, small_cells.var_names).to_numpy()
    finite = np.isfinite(expected)
    assert np.array_equal(finite, np.isfinite(got)) and (~finite).any()  # always-zero genes included
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-6)
