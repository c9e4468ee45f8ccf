import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cellsmith.data import normalize, read_bulk, simulate
from cellsmith.errors import InputError


def test_normalize_kinds_agree():
    x = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [2.0, 2.0, 4.0]])
    dense = normalize.log1p_normalize(x)
    sparse = normalize.log1p_normalize(sp.csr_matrix(x)).toarray()
    tensor = normalize.log1p_normalize(torch.tensor(x)).numpy()
    np.testing.assert_allclose(dense, sparse, rtol=1e-6)
    np.testing.assert_allclose(dense, tensor, rtol=1e-6)
    np.testing.assert_allclose(np.expm1(dense).sum(1), [1e4, 0, 1e4])
    np.testing.assert_allclose(normalize.cpm(x).sum(1), [1e6, 0, 1e6])


def test_bulk_to_network_matches_single_cell_scale():
    counts = np.array([[10.0, 30.0, 60.0]])
    np.testing.assert_allclose(
        normalize.bulk_to_network(normalize.cpm(counts)), normalize.log1p_normalize(counts)
    )


def test_read_bulk_orientation(tmp_path):
    table = pd.DataFrame(
        np.arange(40, dtype=float).reshape(10, 4),
        index=[f"G{i}" for i in range(10)],
        columns=["s1", "s2", "s3", "s4"],
    )
    table.to_csv(tmp_path / "genes_by_samples.csv")
    adata = read_bulk(tmp_path / "genes_by_samples.csv")
    assert adata.shape == (4, 10) and list(adata.obs_names) == ["s1", "s2", "s3", "s4"]
    assert "rows taken as genes" in adata.uns["cellsmith"]["orientation"]
    table.T.to_csv(tmp_path / "samples_by_genes.tsv", sep="\t")
    adata = read_bulk(tmp_path / "samples_by_genes.tsv")
    assert adata.shape == (4, 10) and "columns taken as genes" in adata.uns["cellsmith"]["orientation"]
    with pytest.raises(InputError, match="does not exist"):
        read_bulk(tmp_path / "absent.csv")


def test_simulated_single_cells_have_the_promised_structure():
    adata = simulate.singlecell(
        1000, 400, cell_types=3, donors=2, timepoints=("0h", "6h", "24h"), perturbations=5, seed=3
    )
    x = adata.X.toarray()
    assert np.all(x == np.round(x)) and x.min() >= 0
    zero = adata.var_names.isin(adata.uns["simulation"]["always_zero_genes"])
    assert zero.sum() == 20 and x[:, zero].sum() == 0
    library = x.sum(1)
    assert np.quantile(library, 0.95) / np.quantile(library, 0.05) > 4
    means = x[:, ~zero].mean(0)
    assert np.quantile(means, 0.99) / np.quantile(means[means > 0], 0.05) > 100
    assert set(adata.obs.columns) == {"cell_type", "donor_id", "timepoint", "target_gene"}
    assert (adata.obs["target_gene"] == "non-targeting").mean() == pytest.approx(0.25, abs=0.05)
    target = adata.uns["simulation"]["targets"][0]
    is_target = adata.obs["target_gene"] == target
    control = adata.obs["target_gene"] == "non-targeting"
    g = adata.var_names.get_loc(target)
    assert x[is_target, g].mean() < 0.3 * x[control, g].mean()


def test_simulation_is_seeded():
    a = simulate.singlecell(200, 100, seed=7)
    b = simulate.singlecell(200, 100, seed=7)
    c = simulate.singlecell(200, 100, seed=8)
    assert (a.X != b.X).nnz == 0 and (a.X != c.X).nnz > 0


def test_simulated_bulk_truth(small_cells):
    bulk = simulate.bulk(small_cells, 20, cells_per_sample=100, seed=0)
    props = bulk.obsm["proportions"]
    np.testing.assert_allclose(props.sum(1), 1.0)
    assert list(props.columns) == sorted(small_cells.obs["cell_type"].unique())
    assert np.all(bulk.X == np.round(bulk.X))
    lib = np.asarray(small_cells.X.sum(1)).ravel().mean()
    assert bulk.X.sum(1).mean() == pytest.approx(100 * lib, rel=0.2)


def _wide_genes_by_samples(n_genes: int = 6, n_samples: int = 12) -> pd.DataFrame:
    """Genes x samples with more samples than genes: the shape alone points the wrong way."""
    genes = ["CD3E", "MS4A1", "LYZ", "NKG7", "ENSG00000105374", "CD14"][:n_genes]
    values = np.arange(n_genes * n_samples, dtype=float).reshape(n_genes, n_samples)
    return pd.DataFrame(values, index=genes, columns=[f"GSM{1000 + i}" for i in range(n_samples)])


def test_read_bulk_orientation_evidence_before_shape(tmp_path):
    table = _wide_genes_by_samples()
    table.to_csv(tmp_path / "wide.csv")
    adata = read_bulk(tmp_path / "wide.csv")
    assert adata.shape == (12, 6) and list(adata.var_names) == list(table.index)
    assert "look like gene ids" in adata.uns["cellsmith"]["orientation"]
    # Overlap with the model's genes is the first evidence.
    renamed = table.rename(index=dict(zip(table.index, [f"g{i}" for i in range(6)], strict=True)))
    renamed.to_csv(tmp_path / "renamed.csv")
    adata = read_bulk(tmp_path / "renamed.csv", genes=["g0", "g1", "g2"])
    assert adata.shape == (12, 6) and "3 of them are the model's genes" in adata.uns["cellsmith"]["orientation"]
    # An explicit orientation wins over every guess.
    adata = read_bulk(tmp_path / "wide.csv", orientation="samples-by-genes")
    assert adata.shape == (6, 12) and adata.uns["cellsmith"]["orientation"] == "--orientation samples-by-genes"
    with pytest.raises(InputError, match="--orientation 'sideways'"):
        read_bulk(tmp_path / "wide.csv", orientation="sideways")


def test_read_bulk_sniffs_the_separator(tmp_path):
    # A comma-separated table named .txt (0.1 read it as 2 rows x 0 columns).
    _wide_genes_by_samples().to_csv(tmp_path / "bulk.txt")
    adata = read_bulk(tmp_path / "bulk.txt", orientation="genes-by-samples")
    assert adata.shape == (12, 6)
