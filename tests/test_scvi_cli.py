"""`cellsmith scvi train / reconstruct / predict`: outputs on success, nothing on bad input.

Commands run in-process; a user error surfaces as the CellsmithError that `cellsmith.cli.main`
prints as `error: ...` with exit status 2 (tested for every command in tests/test_cli.py).
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
from typer.testing import CliRunner

from cellsmith.cli import app
from cellsmith.data import normalize, simulate
from cellsmith.errors import CellsmithError

runner = CliRunner()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("scvi_cli")
    cells = simulate.singlecell(240, 100, cell_types=2, donors=2, timepoints=("0h", "24h"), seed=4)
    cells.write_h5ad(path / "cells.h5ad")
    (path / "cfg.yaml").write_text("max_epochs: 2\nn_hidden: 32\nn_latent: 4\npatience: 0\n")
    result = runner.invoke(
        app,
        ["scvi", "train", "--data", str(path / "cells.h5ad"), "--covariate-key", "timepoint",
         "--config", str(path / "cfg.yaml"), "--likelihood", "nb", "--out", str(path / "model")],
    )
    assert result.exit_code == 0, result.output
    return path


def test_train_writes_a_loadable_model(workdir):
    names = {p.name for p in (workdir / "model").iterdir()}
    expected = {
        "cellsmith_model.json", "weights.safetensors", "config.yaml", "setup.json", "genespace.json", "history.csv",
    }
    assert expected | {"training", "training_curves.png"} <= names
    assert "likelihood: nb" in (workdir / "model" / "config.yaml").read_text()


def test_reconstruct_writes_h5ad_metrics_figures_report(workdir):
    out = workdir / "rec"
    result = runner.invoke(
        app,
        [
            "scvi", "reconstruct", "--model", str(workdir / "model"), "--data", str(workdir / "cells.h5ad"), "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert {"reconstructed.h5ad", "metrics.json", "metrics.csv", "umap.png", "gene_means.png", "report.html"} <= {
        p.name for p in out.iterdir()
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["by_group"]) == {"donor_id", "timepoint"}
    assert 0.0 <= metrics["overall"]["knn_mixing"] <= 1.0
    combined = ad.read_h5ad(out / "reconstructed.h5ad")
    assert combined.n_obs == 480 and list(combined.obs["source"].cat.categories) == ["real", "reconstructed"]
    assert combined.obsm["X_umap"].shape == (480, 2)
    real = combined.obs["source"].to_numpy() == "real"
    assert np.allclose(combined.X[real], normalize.log1p_normalize(combined.layers["counts"][real]), atol=1e-5)


def test_predict_sets_covariates(workdir):
    out = workdir / "pred.h5ad"
    result = runner.invoke(
        app,
        [
            "scvi", "predict", "--model", str(workdir / "model"), "--data", str(workdir / "cells.h5ad"), "--set",
            "timepoint=0h", "--out", str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    pred = ad.read_h5ad(out)
    assert (pred.obs["timepoint"] == "0h").all() and "sampled_counts" in pred.layers


@pytest.mark.parametrize(
    ("make_input", "args", "message"),
    [
        (
            lambda c: ad.AnnData(X=normalize.log1p_normalize(c.X), obs=c.obs, var=c.var),
            ["--set", "timepoint=0h"],
            "raw counts",
        ),
        (lambda c: c, ["--set", "timepoint=48h"], "not seen in training"),
        (lambda c: c, ["--set", "batch=x"], "conditioned on"),
        (lambda c: c, ["--set", "timepoint"], "KEY=VALUE"),
        (lambda c: c[:, :90].copy(), ["--set", "timepoint=0h"], "gene space"),
        (
            lambda c: ad.AnnData(X=c.X, obs=c.obs[["timepoint"]], var=c.var),
            ["--set", "timepoint=0h"],
            "no obs column 'donor_id'",
        ),
    ],
)
def test_bad_predict_input_is_an_error_and_writes_nothing(workdir, make_input, args, message):
    bad = workdir / "bad.h5ad"
    make_input(ad.read_h5ad(workdir / "cells.h5ad")).write_h5ad(bad)
    out = workdir / "bad_pred.h5ad"
    result = runner.invoke(
        app, ["scvi", "predict", "--model", str(workdir / "model"), "--data", str(bad), *args, "--out", str(out)]
    )
    assert isinstance(result.exception, CellsmithError)
    assert message in " ".join(str(result.exception).split())
    assert not out.exists()


def test_bad_train_input_writes_nothing(workdir):
    cells = ad.read_h5ad(workdir / "cells.h5ad")
    ad.AnnData(X=normalize.log1p_normalize(cells.X), obs=cells.obs, var=cells.var).write_h5ad(workdir / "log.h5ad")
    for args in (["--data", str(workdir / "log.h5ad")], ["--data", str(workdir / "cells.h5ad"), "--batch-key", "nope"]):
        result = runner.invoke(app, ["scvi", "train", *args, "--out", str(workdir / "never")])
        assert isinstance(result.exception, CellsmithError), result.output
        assert not (workdir / "never").exists()
