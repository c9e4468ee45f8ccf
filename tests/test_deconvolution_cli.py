import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from cellsmith.data import normalize
from cellsmith.deconvolution.evaluate import compare, read_mapping, read_truth

from deconvolution_tiny import invoke_deconvolve, write_tiny_inputs


def run_cli(*args):
    """In a fresh process, as a user runs it (error handling of cellsmith.cli.main included)."""
    return subprocess.run(
        [sys.executable, "-m", "cellsmith.cli", "deconvolve", *map(str, args)], capture_output=True, text=True
    )


def invoke(*args):
    """In this process (no start-up cost) for the commands expected to succeed."""
    result = invoke_deconvolve(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("deconvolve")
    _, bulk = write_tiny_inputs(root, 12)
    table = pd.DataFrame(bulk.X.T, index=bulk.var_names, columns=bulk.obs_names)  # genes x samples
    table.to_csv(root / "bulk.csv")
    bulk.obsm["proportions"].rename(columns={"A": "typeA"}).to_csv(root / "truth.csv")
    return root


def test_train_predict_evaluate(files):
    model = files / "model"
    result = invoke("train", "--reference", files / "ref.h5ad", "--cell-type-key", "cell_type",
                    "--config", files / "config.yaml", "--out", model, "--no-progress")
    assert "validation HP-VADE: r" in result.output and (model / "report.html").is_file()
    assert (model / "weights.safetensors").is_file()

    invoke("predict", "--model", model, "--bulk", files / "bulk.csv", "--out", files / "props.csv")
    props = pd.read_csv(files / "props.csv", index_col=0)
    nnls = pd.read_csv(files / "props.nnls.csv", index_col=0)
    fit = pd.read_csv(files / "props.fit.csv", index_col=0)
    assert list(props.columns) == ["A", "B", "C"] and props.shape == nnls.shape == (12, 3)
    np.testing.assert_allclose(props.sum(1), 1.0, rtol=1e-5)
    assert {"r2_log_hpvade", "r2_log_nnls"} <= set(fit.columns)

    (files / "map.yaml").write_text("typeA: A\nB: B\nC: C\n")
    invoke("evaluate", "--pred", files / "props.csv", "--truth", files / "truth.csv",
           "--map", files / "map.yaml", "--model", model, "--out", files / "eval")
    pooled = pd.read_csv(files / "eval" / "pooled_metrics.csv", index_col=0)
    assert list(pooled.index) == ["HP-VADE", "NNLS"] and pooled.loc["NNLS", "pearson"] > 0.9
    assert (files / "eval" / "report.html").is_file() and (files / "eval" / "scatter.png").is_file()
    expected = compare(
        {"HP-VADE": props, "NNLS": nnls}, read_truth(files / "truth.csv"), mapping=read_mapping(files / "map.yaml")
    )
    np.testing.assert_allclose(pooled[["pearson", "mae"]], expected.pooled[["pearson", "mae"]].astype(float))


def test_training_flags_override_the_config(files):
    model = files / "model_flags"
    result = invoke("train", "--reference", files / "ref.h5ad", "--cell-type-key", "cell_type",
                    "--config", files / "config.yaml", "--out", model, "--no-progress", "--max-epochs", "3",
                    "--max-steps", "4", "--accelerator", "cpu", "--devices", "1", "--precision", "32")
    assert "(1 epochs" in result.output  # 256 samples in batches of 64: 4 steps are one epoch
    written = yaml.safe_load((model / "config.yaml").read_text())
    assert written["max_epochs"] == 3 and written["max_steps"] == 4 and written["accelerator"] == "cpu"
    assert written["n_train_samples"] == 256 and written["progress_bar"] is False


def test_bad_input_is_a_clean_error_and_writes_nothing(files):
    result = run_cli("train", "--reference", files / "ref.h5ad", "--cell-type-key", "celltype",
                     "--out", files / "never_model")
    assert result.returncode == 2 and "no obs column 'celltype'" in result.stderr
    assert "Traceback" not in result.stderr and not (files / "never_model").exists()

    result = run_cli("train", "--reference", files / "ref.h5ad", "--cell-type-key", "cell_type",
                     "--precision", "64", "--out", files / "never_model")
    assert result.returncode == 2 and "precision" in result.stderr and not (files / "never_model").exists()

    bulk = pd.read_csv(files / "bulk.csv", index_col=0)
    logged = pd.DataFrame(np.log1p(normalize.cpm(bulk.T.to_numpy())).T, index=bulk.index, columns=bulk.columns)
    logged.to_csv(files / "logged.csv")
    result = run_cli(
        "predict", "--model", files / "model", "--bulk", files / "logged.csv", "--out", files / "never.csv"
    )
    assert result.returncode == 2 and "LOG1P" in result.stderr
    assert not (files / "never.csv").exists() and not (files / "never.nnls.csv").exists()


def test_hoek_truth_maps_t_cells_and_skips_neutrophils(shared_file, tmp_path):
    path = shared_file("hoek2015_pbmc_bulk.h5ad")
    truth = read_truth(path, "flow_fractions")
    pred = pd.DataFrame(
        {"B": 0.1, "CD4 T": 0.3, "CD8 T": 0.2, "NK": 0.2, "Monocyte": 0.2}, index=truth.index
    )
    mapping = read_mapping(None, ["Tcells=CD4 T,CD8 T", "Bcells=B", "Neutrophils=NK"])
    result = compare({"HP-VADE": pred}, truth, mapping=mapping)
    np.testing.assert_allclose(result.preds["HP-VADE"]["Tcells"], 0.5)
    assert any("Neutrophils" in note for note in result.notes)
    assert result.pooled.loc["HP-VADE", "n"] == 4  # 2 samples x (Tcells, Bcells)
