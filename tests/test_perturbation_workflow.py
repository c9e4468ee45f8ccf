"""pretrain -> finetune -> predict -> evaluate through the CLI on a tiny simulated screen."""

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellsmith.data import cross_dataset_hvg, simulate
from cellsmith.perturbation import PerturbationModel, Split

FAST = "max_epochs: 2\nsteps_per_epoch: 4\nbatch_size: 4\nset_size: 16\nhidden: 16\nprogress_bar: false\n"


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
    assert "digest" in pretrained.stdout and (tiny / "pre" / "weights.safetensors").is_file()
    assert "uses the pretraining gene indices" in finetuned.stderr
    split = Split.read(tiny / "model" / "split.json")
    assert split.test_targets and not set(split.test_targets) & set(split.train_targets)

    targets = ",".join(split.test_targets)
    pred = run_cli(
        "perturb", "predict", "--model", tiny / "model", "--controls", tiny / "model" / "heldout_controls.h5ad",
        "--targets", targets, "--cells-per-target", "30", "--out", tiny / "pred.h5ad",
    )
    assert pred.returncode == 0, pred.stderr
    predicted = ad.read_h5ad(tiny / "pred.h5ad")
    labels = predicted.obs["target_gene"].astype(str)
    assert (labels == "non-targeting").any()
    assert all((labels == t).sum() == 30 for t in split.test_targets)
    assert list(predicted.var_names) == list(PerturbationModel.load(tiny / "model").genespace.names)
    assert 0 <= predicted.X.min() and predicted.X.max() < 15  # log1p(CP10k)

    ev = run_cli(
        "perturb", "evaluate", "--pred", tiny / "pred.h5ad", "--real", tiny / "model" / "heldout_real.h5ad",
        "--baselines", "--out", tiny / "eval",
    )
    assert ev.returncode == 0, ev.stderr
    summary = pd.read_csv(tiny / "eval" / "summary.csv", index_col=0)
    assert list(summary.index) == ["model", "no_change", "perturbation_mean", "linear", "additive"]
    assert {"mae", "discrimination_score_l1", "overlap_at_N", "normalized_score"} <= set(summary.columns)
    assert summary.loc["perturbation_mean", "normalized_score"] == 0.0
    table = pd.read_csv(tiny / "eval" / "per_perturbation.csv")
    assert set(table["perturbation"]) == set(split.test_targets) and len(table) == 5 * len(split.test_targets)
    assert (tiny / "eval" / "report.html").is_file() and (tiny / "eval" / "mean_shift.png").is_file()


def test_shuffled_gene_order_is_refused_by_the_cli_and_nothing_is_written(tiny, pretrained):
    from cellsmith.data import HVGSelection

    selection = HVGSelection.read(tiny / "hvg")
    names = list(np.random.default_rng(0).permutation(selection.genespace.names))
    from cellsmith.data import GeneSpace

    selection.genespace = GeneSpace(names)
    selection.write(tiny / "hvg_shuffled")
    result = run_cli(
        "perturb", "finetune", "--data", tiny / "screen.h5ad", "--genes", tiny / "hvg_shuffled", "--pretrained",
        tiny / "pre", "--config", tiny / "fast.yaml", "--out", tiny / "refused",
    )
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
        max_epochs=1, steps_per_epoch=2, batch_size=2, set_size=8, hidden=8, n_embed=4, progress_bar=False,
        scvi_baseline=True, scvi_max_epochs=2,
    )
    for split, expected in (("heldout-cells", True), ("heldout-perturbations", False)):
        model_dir = tiny / f"scvi_{split}"
        _, parts = run_finetune(screen, space, model_dir, config=config, split=split)
        pred = run_predict(
            model_dir,
            ad.read_h5ad(model_dir / "heldout_controls.h5ad"),
            parts.test_targets[:2],
            tiny / f"scvi_{split}.h5ad",
            cells_per_target=20,
        )
        with caplog.at_level(logging.WARNING, logger="cellsmith"):
            evaluation = run_evaluate(
                pred, ad.read_h5ad(model_dir / "heldout_real.h5ad"), tiny / f"scvi_eval_{split}",
                baselines_from=model_dir,
            )
        assert ("conditional_scvi" in evaluation.summary.index) == expected
    assert any("cannot predict targets unseen in training" in r.message for r in caplog.records)


def test_label_key_and_counts_layer_are_saved_and_read_back(tiny):
    """A screen whose labels are in 'guide_target' and whose counts are in a layer (X holds
    log1p values, which would be refused): predict and evaluate take both from the model."""
    from cellsmith.data import normalize

    for name in ("screen", "cells"):
        data = ad.read_h5ad(tiny / f"{name}.h5ad")
        data.layers["counts"] = data.X.copy()
        data.X = normalize.log1p_normalize(data.X)
        if "target_gene" in data.obs:
            data.obs = data.obs.rename(columns={"target_gene": "guide_target"})
        data.write_h5ad(tiny / f"{name}_layer.h5ad")
    pre = run_cli(
        "perturb", "pretrain", "--data", tiny / "cells_layer.h5ad", "--genes", tiny / "hvg", "--config",
        tiny / "pre.yaml", "--counts-layer", "counts", "--max-steps", "3", "--accelerator", "cpu", "--out",
        tiny / "pre_layer",
    )
    assert pre.returncode == 0, pre.stderr
    assert json.loads((tiny / "pre_layer" / "setup.json").read_text())["counts_layer"] == "counts"
    fin = run_cli(
        "perturb", "finetune", "--data", tiny / "screen_layer.h5ad", "--perturbation-key", "guide_target", "--genes",
        tiny / "hvg", "--pretrained", tiny / "pre_layer", "--config", tiny / "fast.yaml", "--counts-layer", "counts",
        "--max-epochs", "1", "--accelerator", "cpu", "--devices", "1", "--precision", "32", "--out",
        tiny / "model_layer",
    )
    assert fin.returncode == 0, fin.stderr
    setup = json.loads((tiny / "model_layer" / "setup.json").read_text())
    assert setup["perturbation_key"] == "guide_target" and setup["counts_layer"] == "counts"
    model = PerturbationModel.load(tiny / "model_layer")
    assert model.config.max_epochs == 1 and model.config.accelerator == "cpu"
    target = Split.read(tiny / "model_layer" / "split.json").test_targets[0]
    pred = run_cli(
        "perturb", "predict", "--model", tiny / "model_layer", "--controls",
        tiny / "model_layer" / "heldout_controls.h5ad", "--targets", target, "--cells-per-target", "20", "--out",
        tiny / "pred_layer.h5ad",
    )
    assert pred.returncode == 0, pred.stderr
    predicted = ad.read_h5ad(tiny / "pred_layer.h5ad")
    assert (predicted.obs["guide_target"].astype(str) == target).sum() == 20
    assert predicted.uns["cellsmith"]["perturbation"]["counts_layer"] == "counts"
    ev = run_cli(
        "perturb", "evaluate", "--pred", tiny / "pred_layer.h5ad", "--real", tiny / "model_layer" / "heldout_real.h5ad",
        "--out", tiny / "eval_layer",
    )
    assert ev.returncode == 0, ev.stderr
    assert list(pd.read_csv(tiny / "eval_layer" / "per_perturbation.csv")["perturbation"]) == [target]
    wrong = run_cli(
        "perturb", "evaluate", "--pred", tiny / "pred_layer.h5ad", "--real", tiny / "model_layer" / "heldout_real.h5ad",
        "--counts-layer", "X", "--out", tiny / "eval_wrong",
    )
    assert wrong.returncode == 2 and "raw counts" in wrong.stderr


def test_train_returns_the_model_and_a_saved_folder_predicts_the_same(tiny, tmp_path):
    from cellsmith.data import HVGSelection
    from cellsmith.nn.saving import read_manifest
    from cellsmith.perturbation import FinetuneConfig

    screen = ad.read_h5ad(tiny / "screen.h5ad")
    space = HVGSelection.read(tiny / "hvg").genespace
    config = FinetuneConfig(
        max_epochs=2, steps_per_epoch=2, batch_size=2, set_size=8, hidden=8, n_embed=4, progress_bar=False,
        accelerator="auto", seed=4,
    )
    model = PerturbationModel(config)
    assert model.train(screen, genespace=space, split="heldout-cells") is model
    assert model.split.mode == "heldout-cells" and model.train_targets == model.split.train_targets
    assert {"train_loss", "train_energy", "train_mean_mse", "val_loss"} <= set(model.history.columns)
    model.save(tmp_path / "model")
    assert read_manifest(tmp_path / "model")["workflow"] == "perturbation"
    again = PerturbationModel.load(tmp_path / "model")
    assert again.train_targets == model.train_targets and again.pretrained_digest is None
    controls = screen[screen.obs["target_gene"] == "non-targeting"]
    first = model.predict(controls, model.train_targets[:2], cells_per_target=10, seed=1).X
    np.testing.assert_array_equal(
        again.predict(controls, model.train_targets[:2], cells_per_target=10, seed=1).X, first
    )
    same_seed = PerturbationModel(config).train(screen, genespace=space, split="heldout-cells")
    np.testing.assert_array_equal(
        same_seed.predict(controls, model.train_targets[:2], cells_per_target=10, seed=1).X, first
    )


def test_a_model_folder_of_cellsmith_0_1_loads_and_a_pickle_is_refused(tiny, tmp_path, code_running_payload):
    """0.1 wrote model.pt (a state dict), model_info.json, genespace.json and config.yaml."""
    import pickle

    import torch

    from cellsmith.errors import CellsmithDeprecationWarning, ModelDirectoryError

    model = PerturbationModel.load(tiny / "model")
    old = tmp_path / "old"
    old.mkdir()
    from cellsmith.perturbation.model import NEW_WEIGHTS

    # 0.1 had no vocabulary, learned or pairwise weights (none of them acts on a single target of the space).
    torch.save({k: v for k, v in model.module.state_dict().items() if k not in NEW_WEIGHTS}, old / "model.pt")
    model.genespace.write(old / "genespace.json")
    (old / "config.yaml").write_text(
        "\n".join(f"{k}: {json.dumps(v)}" for k, v in model.config.model_dump(mode="json").items()).replace(
            "batch_size", "pairs_per_batch"
        )
    )
    info = {k: v for k, v in json.loads((tiny / "model" / "setup.json").read_text()).items() if k != "counts_layer"}
    (old / "model_info.json").write_text(json.dumps(info))
    with pytest.warns(CellsmithDeprecationWarning, match="pairs_per_batch"):
        legacy = PerturbationModel.load(old)
    controls = ad.read_h5ad(tiny / "model" / "heldout_controls.h5ad")
    target = model.train_targets[0]
    np.testing.assert_array_equal(
        legacy.predict(controls, [target], cells_per_target=5).X,
        model.predict(controls, [target], cells_per_target=5).X,
    )
    marker = tmp_path / "pwned"
    (old / "model.pt").write_bytes(pickle.dumps(code_running_payload(marker)))
    with pytest.raises(ModelDirectoryError, match="refused"):
        PerturbationModel.load(old)
    assert not marker.exists()
