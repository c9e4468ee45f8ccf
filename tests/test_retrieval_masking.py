"""Masking happens on raw counts, before normalisation, in every cell."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cellsmith.data import normalize
from cellsmith.data.rows import CountRows
from cellsmith.errors import ScaleError
from cellsmith.retrieval import RetrievalWarning, ScreenCounts, mask_counts


def _screen():
    counts = np.array([[5, 1, 4, 0], [2, 3, 0, 6], [1, 0, 7, 2], [0, 4, 1, 1]], dtype=np.float32)
    obs = {"target_gene": ["G0", "G2+ctrl", "non-targeting", "G0_G9"]}
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var={"v": ["a"] * 4}).copy(), counts


def _named(adata):
    adata.var_names = ["G0", "G1", "G2", "G3"]
    return adata


def test_targets_zeroed_in_every_cell_and_absent_targets_warned():
    adata, counts = _screen()
    adata = _named(adata)
    with pytest.warns(RetrievalWarning, match="1 of 3 targets are not among the 4 genes.*G9"):
        masked = mask_counts(adata, perturbation_key="target_gene", control_label="non-targeting")
    assert masked.masked_genes == ("G0", "G2")
    dense = masked.csr().toarray()
    assert not dense[:, [0, 2]].any()  # every cell, the control included
    np.testing.assert_array_equal(dense[:, [1, 3]], counts[:, [1, 3]])


def test_normalisation_comes_after_masking():
    adata, counts = _screen()
    adata = _named(adata)
    with pytest.warns(RetrievalWarning):
        masked = mask_counts(adata, perturbation_key="target_gene", control_label="non-targeting")
    expected = counts.copy()
    expected[:, [0, 2]] = 0
    np.testing.assert_allclose(masked.log1p_cp10k().toarray(), normalize.log1p_normalize(expected), rtol=1e-6)
    # masking the normalised values instead keeps the targets' share of the library size
    wrong = normalize.log1p_normalize(counts)
    wrong[:, [0, 2]] = 0
    assert not np.allclose(masked.log1p_cp10k().toarray(), wrong)


def test_log_data_is_refused_before_masking():
    adata, _ = _screen()
    adata = _named(adata)
    adata.X = normalize.log1p_normalize(adata.X)
    with pytest.raises(ScaleError, match="raw counts"):
        mask_counts(adata, perturbation_key="target_gene", control_label="non-targeting")


def test_screen_counts_cannot_hold_normalised_values():
    with pytest.raises(ScaleError, match="mask_counts"):
        ScreenCounts(CountRows(sp.csr_matrix(np.array([[0.5, 1.0]], dtype=np.float32))), ("a", "b"), (), True)
    with pytest.raises(ScaleError, match="mask_counts"):
        ScreenCounts(sp.csr_matrix(np.array([[1.0, 2.0]], dtype=np.float32)), ("a", "b"), (), True)


def test_no_mask_keeps_counts_and_warns_nothing(recwarn):
    adata, counts = _screen()
    masked = mask_counts(_named(adata), perturbation_key="target_gene", control_label="non-targeting", mask=False)
    assert masked.masked_genes == ()
    np.testing.assert_array_equal(masked.csr().toarray(), counts)
    assert not [w for w in recwarn if issubclass(w.category, RetrievalWarning)]


def test_papalexi_has_nine_targets_to_mask(shared_file):
    adata = ad.read_h5ad(shared_file("papalexi2021_thp1_eccite.h5ad"))
    with pytest.warns(RetrievalWarning, match="16 of 25 targets are not among the 299 genes"):
        masked = mask_counts(adata, perturbation_key="target_gene", control_label="non-targeting")
    assert len(masked.masked_genes) == 9 and "STAT1" in masked.masked_genes
    column = list(masked.genes).index("STAT1")
    assert masked.csr()[:, column].nnz == 0
