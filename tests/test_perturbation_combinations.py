"""Screens of combinations whose targets are mostly not measured: simulation, vocabulary,
heldout-combinations split, and the issue's command sequence through the CLI."""

import json
import logging
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellsmith.data import GeneSpace, simulate
from cellsmith.errors import GeneSpaceError
from cellsmith.perturbation import FinetuneConfig, PerturbationModel, Split, prepare_screen, split_screen
from cellsmith.perturbation.config import PretrainConfig
from cellsmith.perturbation.workflow import read_genespace, run_pretrain

FAST = "max_epochs: 2\nsteps_per_epoch: 4\nbatch_size: 4\nset_size: 16\nhidden: 16\nprogress_bar: false\n"
SEED = 4


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cellsmith.cli", *map(str, args)], capture_output=True, text=True)


def combination_screen(n_cells=1500):
    """8 single targets, 6 of them unmeasured, and 8 doubles; obs ``condition``."""
    cells = simulate.singlecell(
        n_cells, 150, cell_types=1, donors=2, perturbations=8, combinations=8, unmeasured_targets=0.75,
        control_fraction=0.25, seed=SEED,
    )
    screen = cells[:, cells.var["measured"].to_numpy()].copy()
    screen.obs["condition"] = screen.obs.pop("target_gene")
    return screen, cells.uns["simulation"]


def test_simulated_doubles_add_up_with_an_interaction_and_targets_go_unmeasured():
    screen, truth = combination_screen(600)
    labels = set(screen.obs["condition"].astype(str))
    doubles = [p for p in truth["perturbation_labels"] if "+" in p]
    assert len(doubles) == 8 and set(doubles) <= labels
    assert len(truth["unmeasured_targets"]) == 6 and not set(truth["unmeasured_targets"]) & set(screen.var_names)
    lfc, names = truth["perturbation_lfc"], truth["perturbation_labels"]
    a, b = doubles[0].split("+")
    additive = lfc[names.index(a)] + lfc[names.index(b)]
    coefficient = truth["interaction_coefficients"][0]
    other = np.abs(additive) > 0
    other[[int(a[4:]), int(b[4:])]] = False
    np.testing.assert_allclose(lfc[names.index(doubles[0])][other], (1 + coefficient) * additive[other])
    assert (truth["interaction_coefficients"] < 0).mean() > 0.5  # buffering on average
    again, _ = combination_screen(600)
    np.testing.assert_array_equal(again.X.toarray(), screen.X.toarray())


def test_heldout_combinations_split_has_seen_2_2_1_2_and_0_2_rows():
    screen_data, _ = combination_screen(1500)
    space = GeneSpace(screen_data.var_names)
    screen = prepare_screen(screen_data, space, perturbation_key="condition")
    split = split_screen(screen, mode="heldout-combinations", seed=0, test_fraction=0.4)
    kinds = set(split.categories.values())
    assert "seen 2/2" in kinds and "unseen single" in kinds and kinds & {"seen 1/2", "seen 0/2"}
    singles_seen = {p for p in split.train_targets if "+" not in p}
    for p, kind in split.categories.items():
        if kind == "seen 2/2":
            assert set(p.split("+")) <= singles_seen
    assert not set(split.test_targets) & set(split.train_targets)
    assert split_screen(screen, mode="heldout-combinations", seed=0, test_fraction=0.4) == split


def test_a_target_with_no_embedding_is_listed_and_learned(caplog):
    screen_data, truth = combination_screen(1500)
    space = GeneSpace(screen_data.var_names)  # no pretraining: unmeasured targets have no embedding
    config = FinetuneConfig(
        max_epochs=1, steps_per_epoch=2, batch_size=2, set_size=8, hidden=8, n_embed=4, progress_bar=False
    )
    with caplog.at_level(logging.WARNING, logger="cellsmith"):
        model = PerturbationModel(config).train(
            screen_data, genespace=space, perturbation_key="condition", split="heldout-combinations"
        )
    warning = next(r.message for r in caplog.records if "no embedding" in r.message)
    assert all(t in warning for t in truth["unmeasured_targets"])
    assert model.learned_targets and set(model.learned_targets) <= set(truth["unmeasured_targets"])
    assert model.split.test_targets and all(p in model.split.categories for p in model.split.test_targets)
    assert model.module.learned_embedding.shape == (len(model.learned_targets), 4)


def test_issue_command_sequence_on_a_combination_screen(tmp_path):
    screen, truth = combination_screen(1000)
    cells = simulate.singlecell(400, 150, cell_types=1, donors=2, seed=SEED)  # every gene measured
    screen.write_h5ad(tmp_path / "screen.h5ad")
    cells.write_h5ad(tmp_path / "cells.h5ad")
    (tmp_path / "fast.yaml").write_text(FAST)

    hvg = run_cli(
        "genes", "hvg", "--dataset", f"screen={tmp_path / 'screen.h5ad'}", "--dataset",
        f"cells={tmp_path / 'cells.h5ad'}", "--n-top", "100", "--priority-genes-from",
        "screen:condition",
        "--out",
        tmp_path / "hvg",
    )
    assert hvg.returncode == 0, hvg.stderr
    assert "priority genes kept" in hvg.stdout and "/8" in hvg.stdout  # most targets are not measured
    # Pretraining is not part of the issue's sequence: through the API (one subprocess less).
    run_pretrain(
        {"cells": cells},
        read_genespace(tmp_path / "hvg"),
        tmp_path / "pre",
        config=PretrainConfig(max_epochs=2, n_embed=8, hidden=[16], progress_bar=False),
    )
    vocabulary = GeneSpace.read(tmp_path / "pre" / "vocabulary.json")
    assert set(truth["unmeasured_targets"]) <= set(vocabulary.names)
    assert json.loads((tmp_path / "pre" / "setup.json").read_text())["vocabulary_digest"] == vocabulary.digest

    fin = run_cli(
        "perturb", "finetune", "--data", tmp_path / "screen.h5ad", "--perturbation-key", "condition", "--genes",
        tmp_path / "hvg", "--pretrained", tmp_path / "pre", "--split", "heldout-combinations", "--config",
        tmp_path / "fast.yaml", "--out", tmp_path / "model",
    )
    assert fin.returncode == 0, fin.stderr
    assert "dropping" not in fin.stderr and "seen 2/2" in fin.stdout
    split = Split.read(tmp_path / "model" / "split.json")
    assert any("+" in p for p in split.test_targets)

    pred = run_cli(
        "perturb", "predict", "--model", tmp_path / "model", "--controls", tmp_path / "model" / "heldout_controls.h5ad",
        "--targets", ",".join(split.test_targets), "--cells-per-target", "20", "--out", tmp_path / "pred.h5ad",
    )
    assert pred.returncode == 0, pred.stderr
    assert set(split.test_targets) <= set(ad.read_h5ad(tmp_path / "pred.h5ad").obs["condition"].astype(str))

    ev = run_cli(
        "perturb", "evaluate", "--pred", tmp_path / "pred.h5ad", "--real", tmp_path / "model" / "heldout_real.h5ad",
        "--baselines", "--out", tmp_path / "eval",
    )
    assert ev.returncode == 0, ev.stderr
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv", index_col=0)
    assert list(summary.index) == ["model", "no_change", "perturbation_mean", "linear", "additive"]
    assert {"pearson_top50_de", "energy_ratio", "normalized_score"} <= set(summary.columns)
    assert summary["energy_ratio"].notna().all() and (summary["energy_ratio"] > 0).all()
    by_category = pd.read_csv(tmp_path / "eval" / "summary_by_category.csv")
    assert set(by_category["category"]) == set(split.categories.values())
    assert "log1p(CP10k)" in (tmp_path / "eval" / "report.html").read_text()

    (tmp_path / "model" / "vocabulary.json").write_text(GeneSpace([*vocabulary.names[:-1]]).to_json())
    with pytest.raises(GeneSpaceError, match=vocabulary.digest):
        PerturbationModel.load(tmp_path / "model")
