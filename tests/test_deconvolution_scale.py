"""Large references: pseudo-bulk and training never densify the reference; --backed = in memory."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

import cellsmith.data.pseudobulk as pb
from cellsmith.data import normalize, simulate
from cellsmith.data.rows import CountRows, read_backed
from cellsmith.deconvolution import DeconvolutionConfig, Deconvolver
from cellsmith.deconvolution.model import cap_per_type
from cellsmith.deconvolution.reference import (
    consistent_marker_scores,
    detection_by_type,
    group_means,
    group_means_by_part,
    mean_cpm_by_type,
    pooled_means,
    type_codes,
)

from deconvolution_tiny import TINY as TINY_OPTIONS
from deconvolution_tiny import invoke_deconvolve, write_tiny_config

TINY = {**TINY_OPTIONS, "progress_bar": False, "vae_cells_per_type": 150}
#: Rows of the row blocks in these tests: every pass reads several blocks.
BLOCK = 97


@pytest.fixture(scope="module")
def reference():
    return simulate.singlecell(1500, 120, cell_types=("A", "B", "C"), donors=1, seed=0)


@pytest.fixture(scope="module")
def reference_file(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "ref.h5ad"
    written = reference.copy()
    written.X = sp.csr_matrix(written.X, dtype=np.float32)
    written.write_h5ad(path)
    return path


@pytest.fixture
def small_blocks(monkeypatch):
    """Every block-wise pass reads blocks of BLOCK rows."""
    blocks = CountRows.blocks
    monkeypatch.setattr(CountRows, "blocks", lambda self, block_rows=BLOCK: blocks(self, min(block_rows, BLOCK)))
    monkeypatch.setattr(pb, "_DENSE_ELEMENTS", BLOCK * 120)


@pytest.fixture
def no_whole_densification(monkeypatch):
    """``toarray``/``todense`` of a sparse matrix with more rows than a block raise."""
    limit = max(BLOCK, pb._BLOCK_SAMPLES)
    for cls in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix):
        for name in ("toarray", "todense"):
            original = getattr(cls, name)

            def guarded(self, *args, _original=original, **kwargs):
                if self.shape[0] > limit:
                    raise AssertionError(f"densified a {self.shape} sparse matrix")
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, guarded)


def _labels(reference):
    return reference.obs["cell_type"].astype(str).to_numpy()


def _by_hand(reference, n_samples, cells_per_sample, seed, cells=None):
    """The pseudo-bulk sums of cellsmith 0.1: the membership times the densified reference."""
    labels = _labels(reference)
    cells = np.arange(reference.n_obs) if cells is None else cells
    types = sorted(set(labels[cells]))
    rng = np.random.default_rng(seed)
    props = pb.draw_proportions(n_samples, len(types), alpha=1.0, sparse_fraction=0.0, rng=rng)
    n_per_type = rng.multinomial(cells_per_sample, props)
    groups = pb._draw_cells([np.flatnonzero(labels[cells] == t) for t in types], n_per_type, rng)
    members = pb.membership_matrix(groups, cells.size).toarray()
    return members @ reference.X[cells].toarray().astype(np.float32)


@pytest.mark.parametrize("speedup", [1e-9, 1e12], ids=["sparse", "dense"])
def test_pseudobulk_sums_equal_the_dense_product(reference, speedup, monkeypatch, small_blocks):
    monkeypatch.setattr(pb, "_DENSE_SPEEDUP", speedup)
    labels = _labels(reference)
    mixed = pb.mix_counts(reference.X, labels, 1500, cells_per_sample=60, seed=3)
    np.testing.assert_array_equal(mixed.counts, _by_hand(reference, 1500, 60, seed=3))
    cells = np.flatnonzero(labels != "B")[::2]
    subset = pb.mix_counts(reference.X, labels, 40, cells=cells, cells_per_sample=30, seed=4)
    np.testing.assert_array_equal(subset.counts, _by_hand(reference, 40, 30, seed=4, cells=cells))
    assert subset.cell_types == ["A", "C"]


def test_pseudobulk_never_densifies_the_reference(reference, no_whole_densification, small_blocks, monkeypatch):
    for speedup in (1e-9, 1e12):
        monkeypatch.setattr(pb, "_DENSE_SPEEDUP", speedup)
        bulk = pb.pseudobulk(reference, 1100, cells_per_sample=50, seed=0)
        np.testing.assert_allclose(bulk.X.sum(1), 1e6, rtol=1e-5)
    with pytest.raises(AssertionError, match="densified"):
        reference.X.toarray()


def test_backed_pseudobulk_equals_in_memory(reference, reference_file, small_blocks, monkeypatch):
    backed = read_backed(reference_file)
    for speedup in (1e-9, 1e12):
        monkeypatch.setattr(pb, "_DENSE_SPEEDUP", speedup)
        from_disk = pb.pseudobulk(backed, 300, cells_per_sample=50, sparse_fraction=0.3, seed=5)
        in_memory = pb.pseudobulk(reference, 300, cells_per_sample=50, sparse_fraction=0.3, seed=5)
        np.testing.assert_array_equal(from_disk.X, in_memory.X)


def test_blockwise_statistics_equal_whole_matrix_ones(reference, small_blocks):
    labels, types = _labels(reference), ["A", "B", "C"]
    dense = reference.X.toarray().astype(np.float64)
    cpm = dense / dense.sum(1, keepdims=True) * 1e6
    for k, t in enumerate(types):
        np.testing.assert_allclose(mean_cpm_by_type(reference.X, labels, types)[:, k], cpm[labels == t].mean(0))
        np.testing.assert_allclose(
            detection_by_type(reference.X, labels, types)[:, k], (dense[labels == t] > 0).mean(0)
        )
    cells = np.arange(0, 1500, 3)
    np.testing.assert_allclose(
        consistent_marker_scores(reference.X, labels, types, min_mean_cpm=10, min_cell_fraction=0.3, cells=cells),
        consistent_marker_scores(dense[cells], labels[cells], types, min_mean_cpm=10, min_cell_fraction=0.3),
    )


def test_means_by_part_are_each_parts_means_and_pool_to_every_cells(reference, small_blocks):
    """One pass gives each part's means exactly as a pass over that part alone, and pooled by
    size they are the means over all the parts' cells (training + validation: every cell)."""
    labels, types = _labels(reference), ["A", "B", "C"]
    parts = [np.arange(0, 1500, 4), np.setdiff1d(np.arange(1500), np.arange(0, 1500, 4))]
    by_part = group_means_by_part(reference.X, labels, types, parts)
    for cells, means in zip(parts, by_part, strict=True):
        groups = np.full(labels.size, -1)
        groups[cells] = type_codes(labels[cells], types)
        alone = group_means(reference.X, groups, len(types))
        for field in ("cpm", "detection", "totals", "sizes"):
            np.testing.assert_array_equal(getattr(means, field), getattr(alone, field))
    every = group_means(reference.X, type_codes(labels, types), len(types))
    pooled = pooled_means(by_part)
    for field in ("cpm", "detection", "totals"):
        np.testing.assert_allclose(getattr(pooled, field), getattr(every, field), rtol=1e-10)
    np.testing.assert_array_equal(pooled.sizes, every.sizes)


def test_type_means_are_scipy_means_exactly(reference):
    """Within one block, the same arithmetic as scipy's mean: thresholds (a detection of exactly
    0.5 against min_cell_fraction 0.5) decide as they did on the whole matrix."""
    labels, types = _labels(reference), ["A", "B", "C"]
    counts = sp.csr_matrix(reference.X, dtype=np.float64)
    for k, t in enumerate(types):
        cpm = np.asarray(normalize.cpm(counts)[labels == t].mean(axis=0)).ravel()
        detection = np.asarray((counts > 0)[labels == t].mean(axis=0)).ravel()
        np.testing.assert_array_equal(mean_cpm_by_type(reference.X, labels, types)[:, k], cpm)
        np.testing.assert_array_equal(detection_by_type(reference.X, labels, types)[:, k], detection)


def test_vae_cells_are_capped_per_type_in_order():
    labels = np.array(["a"] * 10 + ["b"] * 3)
    cells = np.arange(100, 113)
    kept = cap_per_type(cells, labels, 4, seed=0)
    assert kept.size == 7 and np.all(np.diff(kept) > 0) and set(kept[-3:]) == {110, 111, 112}
    np.testing.assert_array_equal(kept, cap_per_type(cells, labels, 4, seed=0))
    np.testing.assert_array_equal(cap_per_type(cells, labels, 10, seed=0), cells)


def _weights(model):
    return {k: v.detach().cpu() for k, v in model.module.state_dict().items()}


def test_training_never_densifies_and_backed_trains_the_same_model(
    reference, reference_file, small_blocks, no_whole_densification, tmp_path
):
    config = DeconvolutionConfig(**{**TINY, "n_marker_genes": 20, "min_cell_fraction": 0.2})
    in_memory = Deconvolver(config).train(reference, cell_type_key="cell_type")
    backed = Deconvolver(config).train(read_backed(reference_file), cell_type_key="cell_type")
    assert list(in_memory.genespace) == list(backed.genespace)
    np.testing.assert_allclose(in_memory.reference_signature, backed.reference_signature, rtol=1e-10)
    assert in_memory.setup == backed.setup
    for name, value in _weights(in_memory).items():
        torch.testing.assert_close(value, _weights(backed)[name], rtol=1e-5, atol=1e-6)
    for method, metrics in in_memory.training["validation"].items():
        assert metrics == pytest.approx(backed.training["validation"][method], rel=1e-4)


def test_cli_backed_writes_the_in_memory_model(reference, reference_file, tmp_path):
    write_tiny_config(tmp_path / "config.yaml", vae_cells_per_type=150)
    models = {}
    for flag in ([], ["--backed"]):
        out = tmp_path / f"model{len(flag)}"
        result = invoke_deconvolve(
            "train", "--reference", reference_file, "--cell-type-key", "cell_type", "--config",
            tmp_path / "config.yaml", "--out", out, "--no-progress", *flag,
        )
        assert result.exit_code == 0, (result.output, result.exception)
        models[len(flag)] = load_file(out / "weights.safetensors")
    for name, value in models[0].items():
        torch.testing.assert_close(value, models[1][name], rtol=1e-5, atol=1e-6)
