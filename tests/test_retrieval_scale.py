"""Retrieval at scale: counts stay sparse, no whole matrix is densified, --backed = in memory."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.decomposition import PCA
from typer.testing import CliRunner

from cellsmith.cli import app
from cellsmith.data import normalize
from cellsmith.retrieval import PCAEmbedder, RetrievalConfig, mask_counts, run_retrieval, split_cells

BLOCK = 128
N_GENES = 120
FAST_HEAD = {"max_epochs": 2, "max_batches_per_epoch": 5, "batch_size": BLOCK}


@pytest.fixture(scope="module")
def screen():
    from cellsmith.data import simulate

    adata = simulate.singlecell(900, N_GENES, cell_types=1, donors=2, perturbations=5, seed=3)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


@pytest.fixture
def no_dense_matrices(monkeypatch):
    """Densifying a sparse matrix larger than BLOCK rows of the screen raises (row blocks of BLOCK rows)."""
    import cellsmith.retrieval.feature_rows as feature_rows

    monkeypatch.setattr(feature_rows, "BLOCK_ROWS", BLOCK)
    for cls in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.csr_array, sp.csc_array, sp.coo_array):
        for name in ("toarray", "todense"):
            original = getattr(cls, name)

            def guarded(self, *args, _original=original, **kwargs):
                if self.shape[0] * self.shape[1] > BLOCK * N_GENES:
                    raise AssertionError(f"densified a {self.shape} sparse matrix whole")
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, guarded)


def test_the_guard_catches_a_whole_densification(screen, no_dense_matrices):
    with pytest.raises(AssertionError, match="densified"):
        screen.X.toarray()


def test_benchmark_never_densifies_the_screen(screen, no_dense_matrices):
    config = RetrievalConfig(embedders=["pca", "logreg", "head:pca", "head:pca:finetune"],
                             queries=["cell", "pseudobulk:10"], head=FAST_HEAD)
    result = run_retrieval(screen, config, progress=False)
    assert len(result.metrics) == (4 * 3 + 1) * 2 * 2


def test_masking_copies_nothing_and_leaves_the_screen_as_it_was(screen):
    before = screen.X.copy()
    counts = mask_counts(screen, perturbation_key="target_gene", control_label="non-targeting")
    assert counts.source.matrix is screen.X  # a view: the screen is not copied
    masked = counts.csr()
    assert (screen.X != before).nnz == 0
    columns = np.isin(np.asarray(counts.genes), counts.masked_genes)
    assert columns.any() and masked[:, columns].nnz == 0
    np.testing.assert_array_equal(masked[:, ~columns].toarray(), before[:, ~columns].toarray())
    subset = counts.rows(np.array([5, 2, 7]))
    np.testing.assert_array_equal(subset.csr().toarray(), masked[[5, 2, 7]].toarray())
    expected = normalize.log1p_normalize(masked[[5, 2, 7]]).toarray()
    np.testing.assert_allclose(subset.log1p_cp10k().toarray(), expected, rtol=1e-6)


def test_pca_on_sparse_input_is_the_exact_pca_of_before(screen):
    """Below 1,000 genes (tall data) the sparse fit is the covariance PCA sklearn picks for dense input."""
    tall = screen[:, :80].copy()  # 900 cells >= 10 x 80 genes
    counts = mask_counts(tall, perturbation_key="target_gene", control_label="non-targeting", mask=False)
    x = counts.log1p_cp10k().toarray()
    dense = PCA(n_components=20, random_state=0).fit(x)
    pca = PCAEmbedder(n_components=20).fit(counts, None, val=None, val_labels=None, seed=0)
    assert pca._pca._fit_svd_solver == dense._fit_svd_solver == "covariance_eigh"
    # the same solver on the same values; the float32 covariance sums in another order (sparse)
    np.testing.assert_allclose(pca.transform(counts), dense.transform(x), atol=5e-3)


def test_pca_fits_on_a_seeded_subsample_of_large_training_sets(screen):
    counts = mask_counts(screen, perturbation_key="target_gene", control_label="non-targeting")
    fit = [PCAEmbedder(n_components=5, max_fit_cells=300).fit(counts, None, val=None, val_labels=None, seed=s)
           for s in (1, 1, 2)]
    z = [p.transform(counts) for p in fit]
    assert z[0].shape == (screen.n_obs, 5) and fit[0]._pca.n_samples_ == 300
    np.testing.assert_array_equal(z[0], z[1])
    assert not np.allclose(np.abs(z[0]), np.abs(z[2]))  # another subsample


def test_backed_equals_in_memory(screen, tmp_path):
    path = tmp_path / "screen.h5ad"
    screen.write_h5ad(path)
    runs = {}
    for backed in (False, True):
        out = tmp_path / f"run-{backed}"
        args = ["retrieve", "run", "--data", str(path), "--embedders", "pca,logreg,head:pca:finetune",
                "--query", "cell,pseudobulk:10", "--max-epochs", "2", "--seeds", "42", "--out", str(out)]
        result = CliRunner().invoke(app, args + (["--backed"] if backed else []))
        assert result.exit_code == 0, result.output
        runs[backed] = pd.read_csv(out / "metrics.csv")
    pd.testing.assert_frame_equal(runs[False], runs[True], check_exact=False, rtol=1e-6)


def test_backed_rows_are_read_in_blocks(screen, tmp_path):
    from cellsmith.data.rows import read_backed

    path = tmp_path / "screen.h5ad"
    screen.write_h5ad(path)
    backed = mask_counts(read_backed(path), perturbation_key="target_gene", control_label="non-targeting")
    memory = mask_counts(screen, perturbation_key="target_gene", control_label="non-targeting")
    assert backed.source.backed and not memory.source.backed
    split = split_cells(screen.obs["target_gene"], seed=0)
    for rows in (split.train, split.test, np.array([8, 3, 3, 600])):
        np.testing.assert_array_equal(backed.rows(rows).csr().toarray(), memory.rows(rows).csr().toarray())
