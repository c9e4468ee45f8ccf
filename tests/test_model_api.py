"""One API for every model (issue 9): ``Model(config).train(...)`` returns the model, a saved folder
loaded in a fresh process predicts exactly the same, and the seed in the config fixes the numbers.

Each case trains a tiny model of one workflow; ``predict`` gives an array to compare, and
``FRESH`` is the same prediction written by a new Python process that only loads the folder.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from cellsmith.data import GeneSpace, simulate

FRESH = """
import sys, numpy as np, anndata as ad, torch
from {module} import {cls}
model = {cls}.load(sys.argv[1])
inputs = sys.argv[2]
np.save(sys.argv[3], {expression})
"""


@dataclass
class Case:
    """One workflow: how to train it at a seed, predict, and predict again in a fresh process."""

    name: str
    module: str
    cls: str
    train: Callable[[int], object]
    predict: Callable[[object], np.ndarray]
    expression: str  # Python expression over ``model`` and ``inputs`` (a folder) for the fresh process


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    cells = simulate.singlecell(300, 60, cell_types=("A", "B", "C"), donors=2, seed=0)
    screen = simulate.singlecell(600, 60, cell_types=1, donors=1, perturbations=4, seed=1)
    bulk = simulate.bulk(cells, 8, cells_per_sample=50, seed=2)
    cells.write_h5ad(folder / "cells.h5ad")
    screen.write_h5ad(folder / "screen.h5ad")
    bulk.write_h5ad(folder / "bulk.h5ad")
    features = torch.randn(240, 12, generator=torch.Generator().manual_seed(3))
    labels = np.repeat(np.arange(6), 40)
    features[:, :6] += torch.nn.functional.one_hot(torch.as_tensor(labels), 6) * 3.0
    np.save(folder / "features.npy", features.numpy())
    return {"folder": folder, "cells": cells, "screen": screen, "bulk": bulk, "features": features, "labels": labels}


def _cases(data) -> list[Case]:
    from cellsmith.deconvolution import DeconvolutionConfig, Deconvolver
    from cellsmith.perturbation import FinetuneConfig, PerturbationModel
    from cellsmith.retrieval.head_model import RetrievalHead
    from cellsmith.retrieval.heads import HeadConfig
    from cellsmith.scvi import ConditionalSCVI, SCVIConfig

    common = {"progress_bar": False, "accelerator": "auto"}
    controls = data["screen"][data["screen"].obs["target_gene"] == "non-targeting"]
    targets = sorted(set(data["screen"].obs["target_gene"]) - {"non-targeting"})[:2]

    def scvi(seed):
        config = SCVIConfig(max_epochs=3, n_latent=4, n_hidden=16, seed=seed, **common)
        return ConditionalSCVI(config).train(data["cells"], batch_key="donor_id")

    def deconvolution(seed):
        config = DeconvolutionConfig(
            max_epochs=2, n_train_samples=64, n_val_samples=16, cells_per_sample=20, n_marker_genes=10,
            min_mean_cpm=0.0, min_cell_fraction=0.0, vae_hidden=[16], deconv_hidden=[16], n_latent=4,
            seed=seed, **common,
        )
        return Deconvolver(config).train(data["cells"], cell_type_key="cell_type")

    def perturbation(seed):
        config = FinetuneConfig(
            max_epochs=2, steps_per_epoch=2, batch_size=2, set_size=8, hidden=8, n_embed=4, min_cells=5,
            seed=seed, **common,
        )
        space = GeneSpace(data["screen"].var_names)
        return PerturbationModel(config).train(data["screen"], genespace=space, split="heldout-cells")

    def head(seed):
        config = HeadConfig(max_epochs=2, max_batches_per_epoch=3, patience=0, seed=seed, **common)
        x, y = data["features"], data["labels"]
        return RetrievalHead(config).train(x[::2], y[::2], val=x[1::2], val_labels=y[1::2])

    return [
        Case(
            "scvi", "cellsmith.scvi", "ConditionalSCVI", scvi,
            lambda m: m.get_latent(data["cells"]),
            "model.get_latent(ad.read_h5ad(inputs + '/cells.h5ad'))",
        ),
        Case(
            "deconvolution", "cellsmith.deconvolution", "Deconvolver", deconvolution,
            lambda m: m.predict(data["bulk"].copy()).proportions.to_numpy(),
            "model.predict(ad.read_h5ad(inputs + '/bulk.h5ad')).proportions.to_numpy()",
        ),
        Case(
            "perturbation", "cellsmith.perturbation", "PerturbationModel", perturbation,
            lambda m: m.predict(controls, targets, cells_per_target=5, seed=1).X,
            "(lambda s: model.predict(s[s.obs['target_gene'] == 'non-targeting'], "
            f"{targets!r}, cells_per_target=5, seed=1).X)(ad.read_h5ad(inputs + '/screen.h5ad'))",
        ),
        Case(
            "retrieval_head", "cellsmith.retrieval.head_model", "RetrievalHead", head,
            lambda m: m.predict(data["features"]),
            "model.predict(torch.from_numpy(np.load(inputs + '/features.npy')))",
        ),
    ]


@pytest.mark.parametrize("name", ["scvi", "deconvolution", "perturbation", "retrieval_head"])
def test_every_model_follows_one_api(data, name, tmp_path):
    case = next(c for c in _cases(data) if c.name == name)
    model = case.train(0)
    assert type(model).__name__ == case.cls, "train() returns the model itself"
    first = np.asarray(case.predict(model))
    np.testing.assert_array_equal(np.asarray(case.predict(case.train(0))), first)  # seed in the config
    assert not np.array_equal(np.asarray(case.predict(case.train(1))), first)

    model.save(tmp_path / "model")
    script = FRESH.format(module=case.module, cls=case.cls, expression=case.expression)
    out = tmp_path / "fresh.npy"
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model"), str(data["folder"]), str(out)],
        check=True, capture_output=True, timeout=300,
    )
    np.testing.assert_array_equal(np.load(out), first)



@pytest.mark.parametrize("weights_file", ["weights.safetensors", "model.pt"])
def test_a_model_folder_whose_weights_are_a_pickle_is_refused_with_exit_2(
    data, tmp_path, weights_file, code_running_payload
):
    """The current format (safetensors replaced by a pickle) and a 0.1-style folder (model.pt)."""
    import pickle

    from cellsmith.scvi import ConditionalSCVI, SCVIConfig

    config = SCVIConfig(max_epochs=1, n_latent=2, n_hidden=8, progress_bar=False, accelerator="cpu")
    ConditionalSCVI(config).train(data["cells"], batch_key="donor_id").save(tmp_path / "model")
    marker = tmp_path / "code_ran"
    if weights_file == "model.pt":  # a folder without manifest is read the 0.1 way
        (tmp_path / "model" / "cellsmith_model.json").unlink()
        (tmp_path / "model" / "weights.safetensors").unlink()
    (tmp_path / "model" / weights_file).write_bytes(pickle.dumps({"state_dict": code_running_payload(marker)}))
    out = tmp_path / "pred.h5ad"
    result = subprocess.run(
        [
            sys.executable, "-m", "cellsmith.cli", "scvi", "predict", "--model", str(tmp_path / "model"), "--data",
            str(data["folder"] / "cells.h5ad"), "--set", "donor_id=donor0", "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert not marker.exists() and not out.exists()
