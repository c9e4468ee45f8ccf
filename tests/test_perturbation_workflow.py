"""pretrain -> finetune -> predict -> evaluate through the CLI on a tiny simulated screen."""

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellsmith.data import cross_dataset_hvg, simulate
from cellsmith.perturbation import PerturbationModel, Split

FAST = "max_epochs: 2\nsteps_per_epoch: 4\npairs_per_batch: 4\nset_size: 16\nhidden: 16\nprogress_bar: false\n"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cellsmith.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A screen (6 targets), unperturbed cells of the same generator, and their gene space."""
    root = tmp_path_factory.mktemp("perturb")
    screen = simulate.singlecell(900, 150, cell_types=1, donors=2, perturbations=6, control_fraction=0.4, seed=3)
    unperturbed = simulate.singlecell(400, 150, cell_types=1, donors=2, seed=3)
    targets = sorted(set(screen.obs["target_gene"].astype(str)) - {"non-targeting"})
    cross_dataset_hvg({"cells": unperturbed, "screen": screen}, n_top=100, priority_genes=targets).write(root / "hvg")
    screen.write_h5ad(root / "screen.h5ad")
    unperturbed.write_h5ad(root / "cells.h5ad")
    (root / "fast.yaml").write_text(FAST)
    (root / "pre.yaml").write_text("max_epochs: 2\nn_embed: 8\nhidden: [16]\nprogress_bar: false\n")
    return root


@pytest.fixture(scope="module")
def pretrained(tiny):
    """``cellsmith perturb pretrain`` on the unperturbed cells (its result, checked)."""
    pre = run_cli("perturb", "pretrain", "--data", tiny / "cells.h5ad", "--genes", tiny / "hvg",
                  "--config", tiny / "pre.yaml", "--out", tiny / "pre")
    assert pre.returncode == 0, pre.stderr
    return pre


@pytest.fixture(scope="module")
def finetuned(tiny, pretrained):
    """``cellsmith perturb finetune`` from the pretrained gene space (its result, checked)."""
    fin = run_cli("perturb", "finetune", "--data", tiny / "screen.h5ad", "--perturbation-key", "target_gene",
                  "--control-label", "non-targeting", "--genes", tiny / "hvg", "--pretrained", tiny / "pre",
                  "--split", "heldout-perturbations", "--seed", "0", "--config", tiny / "fast.yaml",
                  "--out", tiny / "model")
    assert fin.returncode == 0, fin.stderr
    return fin


def test_cli_end_to_end_with_baselines(tiny, pretrained, finetuned):
    assert "digest" in pretrained.stdout and (tiny / "pre" / "gene_embeddings.npy").is_file()
    assert "uses the pretraining gene indices" in finetuned.stderr
    split = Split.read(tiny / "model" / "split.json")
    assert split.test_targets and not set(split.test_targets) & set(split.train_targets)

    targets = ",".join(split.test_targets)
    pred = run_cli("perturb", "predict", "--model", tiny / "model", "--controls", tiny / "model" / "heldout_controls.h5ad",
                   "--targets", targets, "--cells-per-target", "30", "--out", tiny / "pred.h5ad")
    assert pred.returncode == 0, pred.stderr
    predicted = ad.read_h5ad(tiny / "pred.h5ad")
    labels = predicted.obs["target_gene"].astype(str)
    assert (labels == "non-targeting").any()
    assert all((labels == t).sum() == 30 for t in split.test_targets)
    assert list(predicted.var_names) == list(PerturbationModel.load(tiny / "model").genespace.names)
    assert 0 <= predicted.X.min() and predicted.X.max() < 15  # log1p(CP10k)

    ev = run_cli("perturb", "evaluate", "--pred", tiny / "pred.h5ad", "--real", tiny / "model" / "heldout_real.h5ad",
                 "--baselines", "--out", tiny / "eval")
    assert ev.returncode == 0, ev.stderr
    summary = pd.read_csv(tiny / "eval" / "summary.csv", index_col=0)
    assert list(summary.index) == ["model", "no_change", "perturbation_mean", "linear"]
    assert {"mae", "discrimination_score_l1", "overlap_at_N", "normalized_score"} <= set(summary.columns)
    assert summary.loc["perturbation_mean", "normalized_score"] == 0.0
    table = pd.read_csv(tiny / "eval" / "per_perturbation.csv")
    assert set(table["perturbation"]) == set(split.test_targets) and len(table) == 4 * len(split.test_targets)
    assert (tiny / "eval" / "report.html").is_file() and (tiny / "eval" / "mean_shift.png").is_file()


def test_shuffled_gene_order_is_refused_by_the_cli_and_nothing_is_written(tiny, pretrained):
    from cellsmith.data import HVGSelection

    selection = HVGSelection.read(tiny / "hvg")
    names = list(np.random.default_rng(0).permutation(selection.genespace.names))
    from cellsmith.data import GeneSpace

    selection.genespace = GeneSpace(names)
    selection.write(tiny / "hvg_shuffled")
    result = run_cli("perturb", "finetune", "--data", tiny / "screen.h5ad", "--genes", tiny / "hvg_shuffled",
                     "--pretrained", tiny / "pre", "--config", tiny / "fast.yaml", "--out", tiny / "refused")
    assert result.returncode == 2
    assert selection.genespace.digest in result.stderr
    assert HVGSelection.read(tiny / "hvg").genespace.digest in result.stderr
    assert not (tiny / "refused").exists()


def test_same_seed_same_prediction(tiny, finetuned):
    model = PerturbationModel.load(tiny / "model")
    controls = ad.read_h5ad(tiny / "model" / "heldout_controls.h5ad")
    target = model.train_targets[0]
    first = model.predict(controls, [target], cells_per_target=20, seed=5).X
    again = model.predict(controls, [target], cells_per_target=20, seed=5).X
    other = model.predict(controls, [target], cells_per_target=20, seed=6).X
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_conditional_scvi_baseline_on_seen_targets_only(tiny, caplog):
    import logging

    from cellsmith.data import HVGSelection
    from cellsmith.perturbation import FinetuneConfig
    from cellsmith.perturbation.workflow import run_evaluate, run_finetune, run_predict

    screen = ad.read_h5ad(tiny / "screen.h5ad")
    space = HVGSelection.read(tiny / "hvg").genespace
    config = FinetuneConfig(
        max_epochs=1, steps_per_epoch=2, pairs_per_batch=2, set_size=8, hidden=8, n_embed=4,
        progress_bar=False, scvi_baseline=True, scvi_max_epochs=2,
    )
    for split, expected in (("heldout-cells", True), ("heldout-perturbations", False)):
        model_dir = tiny / f"scvi_{split}"
        _, parts = run_finetune(screen, space, model_dir, config=config, split=split)
        pred = run_predict(model_dir, ad.read_h5ad(model_dir / "heldout_controls.h5ad"), parts.test_targets[:2],
                           tiny / f"scvi_{split}.h5ad", cells_per_target=20)
        with caplog.at_level(logging.WARNING, logger="cellsmith"):
            evaluation = run_evaluate(pred, ad.read_h5ad(model_dir / "heldout_real.h5ad"), tiny / f"scvi_eval_{split}",
                                      baselines_from=model_dir)
        assert ("conditional_scvi" in evaluation.summary.index) == expected
    assert any("cannot predict targets unseen in training" in r.message for r in caplog.records)
