"""The benchmark end to end: tables, reproducibility, combinations, CLI and bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cellsmith.cli import app, main
from cellsmith.errors import ConfigError, InputError
from cellsmith.retrieval import RetrievalConfig, RetrievalWarning, run_retrieval

METRICS = ["exact_hit@1", "exact_hit@5", "mrr", "ndcg@5", "confidence_auc"]
FAST_HEAD = {"max_epochs": 2, "max_batches_per_epoch": 5}


@pytest.fixture(scope="module")
def screen():
    from cellsmith.data import simulate

    return simulate.singlecell(900, 120, cell_types=1, donors=2, perturbations=5, seed=3)


def test_same_seed_same_table_to_the_last_digit(screen):
    config = RetrievalConfig(embedders=["pca", "logreg", "head:pca"], queries=["cell", "pseudobulk:10"],
                             seeds=[42, 43], head=FAST_HEAD)
    first = run_retrieval(screen, config, progress=False)
    second = run_retrieval(screen, config, progress=False)
    pd.testing.assert_frame_equal(first.metrics, second.metrics, check_exact=True)
    # (3 embedders x 3 libraries + logreg's class ranking) x queries x masks x seeds
    assert len(first.metrics) == (3 * 3 + 1) * 2 * 2 * 2
    assert list(first.metrics.columns) == ["embedder", "library", "query", "mask", "seed", *METRICS]
    seeds = first.metrics.groupby("seed")["mrr"].mean()
    assert seeds[42] != seeds[43]  # the seed changes the split


def test_combinations_get_a_partial_hit(screen):
    adata = screen.copy()
    genes = list(adata.obs["target_gene"].cat.categories.drop("non-targeting"))
    first_two = adata.obs["target_gene"].isin(genes[:2]).to_numpy()
    adata.obs["target_gene"] = adata.obs["target_gene"].astype(str)
    adata.obs.loc[first_two, "target_gene"] = f"{genes[0]}+{genes[1]}"
    adata.obs.loc[adata.obs["target_gene"] == genes[2], "target_gene"] = f"{genes[2]}+ctrl"
    result = run_retrieval(
        adata, RetrievalConfig(embedders=["pca"], libraries=["mean"], queries=["cell"]), progress=False
    )
    assert "partial_hit@1" in result.metrics.columns
    assert (result.metrics["partial_hit@1"] >= result.metrics["exact_hit@1"]).all()
    assert f"{genes[0]}+{genes[1]}" in result.info["candidates"]


def test_missing_control_label_and_key(screen):
    with pytest.raises(InputError, match="control label 'ctrl' not found.*non-targeting"):
        run_retrieval(screen, RetrievalConfig(control_label="ctrl"), progress=False)
    with pytest.raises(InputError, match="no column 'guide'"):
        run_retrieval(screen, RetrievalConfig(perturbation_key="guide"), progress=False)


def test_cli_run_writes_the_contract(screen, tmp_path):
    data = tmp_path / "screen.h5ad"
    adata = screen.copy()
    small = adata.obs["target_gene"] == adata.obs["target_gene"].cat.categories[0]
    adata = adata[~small.to_numpy() | (np.cumsum(small.to_numpy()) <= 5)].copy()  # one target with 5 cells
    adata.write_h5ad(data)
    out = tmp_path / "run"
    args = [
        "retrieve", "run", "--data", str(data), "--perturbation-key", "target_gene", "--control-label", "non-targeting",
        "--embedders", "pca,logreg", "--library", "mean,raw_cell", "--query",
        "cell,pseudobulk:10",
        "--mask", "--seeds", "42", "--out", str(out),
    ]
    with pytest.warns(RetrievalWarning, match="skipped"):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == ["embedder", "library", "query", "mask", "seed", *METRICS]
    assert len(metrics) == (2 * 2 + 1) * 2 * 2 and set(metrics["mask"]) == {"on", "off"}
    assert set(metrics.loc[metrics["library"] == "class", "embedder"]) == {"logreg"}
    for name in ("rankings.csv.gz", "summary.csv", "ablation.csv", "report.html", "config.yaml", "run.json"):
        assert (out / name).is_file(), name
    rankings = pd.read_csv(out / "rankings.csv.gz")
    assert {"query_id", "truth", "rank", "top1", "top5", "confidence"} <= set(rankings.columns)
    assert (rankings["rank"] >= 1).all()
    page = (out / "report.html").read_text()
    assert "Metrics (seed 42)" in page and "mean over" not in page  # one seed: no mean to speak of


def test_cli_bad_input_is_a_clear_error_and_writes_nothing(screen, tmp_path, monkeypatch, capsys):
    data = tmp_path / "screen.h5ad"
    screen.write_h5ad(data)
    base = ["retrieve", "run", "--data", str(data), "--out", str(tmp_path / "out")]
    for extra, message in [
        (["--control-label", "ctrl"], "control label 'ctrl' not found"),
        (["--embedders", "foundation"], "--foundation-checkpoint"),
        (["--query", "bulk"], "pseudobulk:N"),
        (["--seeds", "4x"], "--seeds takes comma-separated integers"),
    ]:
        result = CliRunner().invoke(app, base + extra)
        assert isinstance(result.exception, InputError), (extra, result.exception)
        assert message in str(result.exception)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr("sys.argv", ["cellsmith", *base, "--control-label", "ctrl"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and "error: control label 'ctrl' not found" in capsys.readouterr().err


def test_cli_no_mask_and_config_file(screen, tmp_path):
    data, config = tmp_path / "screen.h5ad", tmp_path / "cfg.yaml"
    screen.write_h5ad(data)
    config.write_text("embedders: [pca]\nlibraries: [mean]\nqueries: [cell]\nseeds: [7]\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["retrieve", "run", "--data", str(data), "--config", str(config), "--no-mask", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics[["embedder", "library", "query", "mask", "seed"]].values.tolist() == [
        ["pca", "mean", "cell", "off", 7]
    ]
    config.write_text("embedders: [pca]\nlibrary: [mean]\n")  # a typo is an error, not a silent default
    result = CliRunner().invoke(
        app, ["retrieve", "run", "--data", str(data), "--config", str(config), "--out", str(out)]
    )
    assert "library" in str(result.exception) and "Valid options" in str(result.exception)


def test_cli_head_hardware_and_training_flags(screen, tmp_path):
    data = tmp_path / "screen.h5ad"
    screen.write_h5ad(data)
    base = [
        "retrieve", "run", "--data", str(data), "--embedders",
        "head:pca",
        "--library", "mean", "--query", "cell", "--no-mask", "--seeds", "42",
    ]
    out, config = tmp_path / "run", tmp_path / "cfg.yaml"
    config.write_text("head:\n  max_batches_per_epoch: 2\n")
    flags = [
        "--accelerator", "cpu", "--devices", "1", "--precision", "bf16-mixed", "--max-epochs", "3", "--max-steps", "4",
    ]
    result = CliRunner().invoke(app, [*base, *flags, "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    head = yaml.safe_load((out / "config.yaml").read_text())["head"]
    assert (head["accelerator"], head["devices"], head["precision"], head["max_epochs"], head["max_steps"]) == (
        "cpu", 1, "bf16-mixed", 3, 4,
    )
    assert head["max_batches_per_epoch"] == 2  # the config file's head options are kept
    assert json.loads((out / "run.json").read_text())["fits"][0]["epochs_trained"] == 2  # 4 steps of 2 per epoch
    for extra, message in [
        (["--devices", "2"], "trains its heads on one device"),
        (["--accelerator", "tpu"], "accelerator"),
    ]:
        result = CliRunner().invoke(app, [*base, *extra, "--out", str(tmp_path / "bad")])
        assert isinstance(result.exception, ConfigError) and message in str(result.exception), (extra, result.exception)
    assert not (tmp_path / "bad").exists()
