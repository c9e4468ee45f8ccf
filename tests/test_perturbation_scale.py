"""Scale (issue 10): no whole-matrix densification on the perturbation paths; ``--backed`` pretraining."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse._compressed import _cs_matrix

from cellsmith.data import cross_dataset_hvg, simulate
from cellsmith.data.rows import count_rows, read_backed
from cellsmith.perturbation import FinetuneConfig, PerturbationModel, PretrainConfig, PretrainedGenes, RemappedCells
from cellsmith.perturbation.baselines import Baselines
from cellsmith.perturbation.evaluate import baseline_predictions, real_in_prediction_space

#: The most rows any batch or block of these tests may densify: a set batch is 4 x 16 = 64 rows,
#: a pretraining batch 32, a block of predicted controls 64 (the held-out controls are ~120).
MAX_DENSE_ROWS = 64
FAST = FinetuneConfig(max_epochs=2, steps_per_epoch=3, batch_size=4, set_size=16, hidden=16, progress_bar=False)
PRE = PretrainConfig(max_epochs=2, n_embed=8, hidden=[16], batch_size=32, progress_bar=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A sparse screen (1,200 cells, 6 targets), unperturbed cells on disk, and their gene space."""
    root = tmp_path_factory.mktemp("scale")
    screen = simulate.singlecell(1200, 120, cell_types=1, donors=2, perturbations=6, control_fraction=0.5, seed=5)
    cells = simulate.singlecell(600, 120, cell_types=2, donors=2, seed=5)
    screen.X, cells.X = sp.csr_matrix(screen.X), sp.csr_matrix(cells.X)
    targets = sorted(set(screen.obs["target_gene"].astype(str)) - {"non-targeting"})
    space = cross_dataset_hvg({"cells": cells, "screen": screen}, n_top=80, priority_genes=targets).genespace
    cells.write_h5ad(root / "cells.h5ad")
    return screen, root / "cells.h5ad", space


@pytest.fixture
def no_whole_densification(monkeypatch):
    """Sparse ``toarray`` (and so ``todense``) refuses more rows than a batch or block."""
    original = _cs_matrix.toarray

    def guarded(self, *args, **kwargs):
        if self.shape[0] > MAX_DENSE_ROWS:
            raise AssertionError(f"densified {self.shape[0]} rows at once")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_cs_matrix, "toarray", guarded)
    monkeypatch.setattr("cellsmith.perturbation.model.BLOCK_ROWS", MAX_DENSE_ROWS)


def test_finetune_predict_baselines_and_real_cells_never_densify_the_screen(data, no_whole_densification):
    screen, _, space = data
    with pytest.raises(AssertionError, match="densified"):
        screen.X.toarray()  # the guard is on
    model = PerturbationModel(FAST).train(screen, genespace=space)
    parts = model.split
    test = screen[np.asarray(parts.test_cells)]
    pred = model.predict(test, parts.test_targets, cells_per_target=20)
    n_controls = int((test.obs["target_gene"] == "non-targeting").sum())
    assert n_controls > MAX_DENSE_ROWS
    assert pred.n_obs == 20 * len(parts.test_targets) + n_controls and pred.X.dtype == np.float32
    train = parts.masks(model.screen.obs_names)["train"]
    baselines = Baselines.fit(
        model.screen.x, np.where(train, model.screen.labels, None), control_label="non-targeting", genespace=space
    )
    predictions = baseline_predictions(pred, baselines, perturbation_key="target_gene", control_label="non-targeting")
    assert set(predictions) == {"no_change", "perturbation_mean", "linear", "additive"}
    real = real_in_prediction_space(screen, pred, perturbation_key="target_gene", control_label="non-targeting")
    assert sp.issparse(real.X) and real.n_obs > MAX_DENSE_ROWS


def test_baselines_from_csr_equal_the_dense_computation(data):
    screen, _, space = data
    model = PerturbationModel(FAST.model_copy(update={"max_epochs": 1})).train(screen, genespace=space)
    x, labels = model.screen.x, model.screen.labels
    train = model.split.masks(model.screen.obs_names)["train"]
    fitted = Baselines.fit(x, np.where(train, labels, None), control_label="non-targeting", genespace=space)
    dense, kept = x[train].toarray().astype(np.float64), labels[train]
    control = dense[kept == "non-targeting"].mean(0)
    targets = sorted(set(kept) - {"non-targeting"})
    shifts = np.stack([dense[kept == t].mean(0) - control for t in targets], 1)
    np.testing.assert_allclose(fitted.mean_shift, shifts.mean(1), rtol=1e-5, atol=1e-6)


def test_pretraining_streams_rows_without_densifying_the_sources(data, no_whole_densification):
    _, path, space = data
    for adata in (ad.read_h5ad(path), read_backed(path)):
        model = PretrainedGenes(PRE).train({"cells": adata}, genespace=space)
        assert model.embeddings.shape == (len(space), 8)


def test_backed_pretraining_equals_in_memory(data):
    """One row block holds these cells, so the shuffled order is the same and so is the model."""
    _, path, space = data
    memory = PretrainedGenes(PRE).train({"cells": ad.read_h5ad(path)}, genespace=space)
    backed = PretrainedGenes(PRE).train({"cells": read_backed(path)}, genespace=space)
    for name, value in memory.module.state_dict().items():
        np.testing.assert_allclose(backed.module.state_dict()[name].numpy(), value.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cache", [False, True])
def test_an_epoch_of_remapped_batches_visits_every_row_once(data, cache):
    screen, path, space = data
    memory = RemappedCells([("cells", ad.read_h5ad(path).X, list(screen.var_names)),
                            ("screen", screen.X, list(screen.var_names))], space)
    backed = RemappedCells([("cells", count_rows(read_backed(path)), list(screen.var_names)),
                            ("screen", screen.X, list(screen.var_names))], space, cache=cache)
    rows = np.arange(0, len(memory), 3)
    for epoch in (0, 1):
        seen = list(backed.batches(rows, batch_size=50, seed=0, epoch=epoch))
        x = np.concatenate([b["x"].numpy() for b in seen])
        expected = memory.__getitems__(rows)
        assert x.shape[0] == rows.size
        # The same rows as the map-style dataset, in another order: compare sorted row sums.
        np.testing.assert_allclose(np.sort(x.sum(1)), np.sort(expected["x"].numpy().sum(1)), rtol=1e-5)
        assert sum(int(b["observed"].sum()) for b in seen) == int(expected["observed"].sum())


def test_cli_pretrain_backed(data, tmp_path):
    import subprocess
    import sys

    screen, path, space = data
    cross_dataset_hvg({"cells": ad.read_h5ad(path)}, n_top=80).write(tmp_path / "hvg")
    (tmp_path / "pre.yaml").write_text("max_epochs: 1\nn_embed: 8\nhidden: [16]\nprogress_bar: false\n")
    run = subprocess.run(
        [sys.executable, "-m", "cellsmith.cli", "perturb", "pretrain", "--data", str(path), "--genes",
         str(tmp_path / "hvg"), "--config", str(tmp_path / "pre.yaml"), "--out", str(tmp_path / "pre"), "--backed"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "read from disk by row blocks" in run.stderr
    assert PretrainedGenes.load(tmp_path / "pre").embeddings.shape == (80, 8)
