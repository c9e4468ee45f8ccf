"""ConditionalSCVI: training, conditioning, counterfactuals, persistence, resumption, errors."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import anndata as ad
import lightning as L
import numpy as np
import pytest
import torch
import yaml

from cellsmith.data import normalize, simulate
from cellsmith.errors import CellsmithDeprecationWarning, GeneSpaceError, InputError, ModelDirectoryError, ScaleError
from cellsmith.nn.saving import read_manifest
from cellsmith.scvi import ConditionalSCVI, SCVIConfig
from cellsmith.scvi.batches import ControlPairing, EpochBatches

FAST = dict(
    max_epochs=3, n_hidden=32, n_latent=4, batch_size=64, patience=0, kl_warmup_epochs=2,
    accelerator="cpu", progress_bar=False,
)


@pytest.fixture(scope="module")
def cells():
    return simulate.singlecell(
        300, 120, cell_types=2, donors=2, timepoints=("0h", "24h"), always_zero_fraction=0.1, seed=0
    )


@pytest.fixture(scope="module")
def trained(cells):
    model = ConditionalSCVI(SCVIConfig(**FAST))
    return model.train(cells, covariate_keys=["timepoint"])


def test_train_records_setup_and_history(trained, cells):
    setup = trained.setup
    assert setup.categories["donor_id"] == ["donor0", "donor1"]
    assert setup.categories["timepoint"] == ["0h", "24h"]
    assert set(setup.always_zero_genes) == set(cells.uns["simulation"]["always_zero_genes"])
    assert len(trained.history) == FAST["max_epochs"]
    columns = {"train_loss", "train_reconstruction", "train_kl", "train_penalty", "kl_weight", "val_loss", "val_kl"}
    assert columns <= set(trained.history)
    assert list(trained.history["kl_weight"]) == [0.0, 0.5, 1.0]
    assert len(trained.split["validation"]) == 30
    assert sorted(np.concatenate(list(trained.split.values()))) == list(range(300))
    assert trained.get_latent(cells).shape == (300, FAST["n_latent"])


def test_predict_swaps_covariate_and_keeps_cells(trained, cells):
    pred = trained.predict(cells, set={"timepoint": "24h"})
    assert pred.obs_names.equals(cells.obs_names)
    assert (pred.obs["timepoint"] == "24h").all()
    assert pred.obs["timepoint_observed"].equals(cells.obs["timepoint"])
    assert np.allclose(pred.X.sum(1), np.asarray(cells.X.sum(1)).ravel(), rtol=1e-4)  # library kept
    assert np.allclose(pred.layers["log1p_norm"], normalize.log1p_normalize(pred.X))
    assert np.array_equal(pred.obsm["X_scvi"], trained.get_latent(cells))
    # cells already at 24h are unchanged; the others move
    at_24h = (cells.obs["timepoint"] == "24h").to_numpy()
    same = trained.reconstruct(cells)["mean"]
    assert np.allclose(pred.X[at_24h], same[at_24h], rtol=1e-5)
    assert not np.allclose(pred.X[~at_24h], same[~at_24h], rtol=1e-3)


def test_bad_inputs_are_clear_errors(trained, cells):
    lognorm = ad.AnnData(X=normalize.log1p_normalize(cells.X), obs=cells.obs, var=cells.var)
    with pytest.raises(ScaleError, match="LOG1P"):
        trained.predict(lognorm, set={"timepoint": "24h"})
    with pytest.raises(InputError, match="categories not seen in training: \\['48h'\\]"):
        trained.predict(cells, set={"timepoint": "48h"})
    with pytest.raises(InputError, match="conditioned on"):
        trained.predict(cells, set={"cell_type": "type0"})
    with pytest.raises(InputError, match="no obs column 'timepoint'"):
        trained.get_latent(ad.AnnData(X=cells.X, obs=cells.obs[["donor_id"]], var=cells.var))
    with pytest.raises(GeneSpaceError, match="gene space"):
        trained.get_latent(cells[:, :100])
    with pytest.raises(InputError, match="no obs column 'batch'"):
        ConditionalSCVI(SCVIConfig(**FAST)).train(cells, batch_key="batch")


def test_save_and_load_in_a_fresh_process_give_identical_outputs(trained, cells, tmp_path):
    trained.save(tmp_path / "model")
    cells.write_h5ad(tmp_path / "cells.h5ad")
    script = (
        "import sys, numpy as np, anndata as ad\n"
        "from cellsmith.scvi import ConditionalSCVI\n"
        "m = ConditionalSCVI.load(sys.argv[1]); a = ad.read_h5ad(sys.argv[2])\n"
        "np.save(sys.argv[3], m.predict(a, set={'timepoint': '0h'}).X)\n"
    )
    out = tmp_path / "pred.npy"
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model"), str(tmp_path / "cells.h5ad"), str(out)], check=True
    )
    assert np.array_equal(np.load(out), trained.predict(cells, set={"timepoint": "0h"}).X)


def test_model_folder_holds_safetensors_setup_and_split(trained, tmp_path):
    trained.save(tmp_path / "model")
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {
        "cellsmith_model.json", "config.yaml", "setup.json", "genespace.json", "weights.safetensors", "history.csv",
    } <= names
    assert read_manifest(tmp_path / "model")["workflow"] == "scvi"
    setup = json.loads((tmp_path / "model" / "setup.json").read_text())
    assert setup["batch_key"] == "donor_id" and setup["split"]["n_cells"] == 300
    loaded = ConditionalSCVI.load(tmp_path / "model")
    assert loaded.config == trained.config and loaded.setup == trained.setup
    for part in ("train", "validation"):
        assert np.array_equal(loaded.split[part], trained.split[part])


def _write_legacy_folder(model, path, state):
    """A model folder as cellsmith 0.1 wrote it: pickled model.pt, old config keys, no manifest."""
    path.mkdir()
    old_keys = [
        "n_latent", "n_hidden", "n_layers", "dropout", "likelihood", "encode_covariates", "zero_penalty",
        "zero_gene_init", "kl_warmup_epochs", "weight_decay", "batch_size", "max_epochs", "patience", "num_threads",
        "val_fraction",
    ]
    config = {key: getattr(model.config, key) for key in old_keys}
    (path / "config.yaml").write_text(yaml.safe_dump({**config, "lr": model.config.learning_rate}))
    setup = model.setup_dict()
    del setup["split"]
    (path / "setup.json").write_text(json.dumps(setup))
    model.genespace.write(path / "genespace.json")
    torch.save(state, path / "model.pt")


def test_a_cellsmith_0_1_folder_loads_with_a_warning(trained, cells, tmp_path):
    state = {"state_dict": trained.module.state_dict(), "seed": 5, "split": dict(trained.split)}
    _write_legacy_folder(trained, tmp_path / "old", state)
    with pytest.warns(CellsmithDeprecationWarning, match="cellsmith 0.1"):
        old = ConditionalSCVI.load(tmp_path / "old")
    assert old.config.seed == 5 and old.config.learning_rate == trained.config.learning_rate
    assert np.array_equal(old.split["validation"], trained.split["validation"])
    assert np.array_equal(old.get_latent(cells), trained.get_latent(cells))
    old.save(tmp_path / "converted")
    assert np.array_equal(ConditionalSCVI.load(tmp_path / "converted").get_latent(cells), trained.get_latent(cells))


def test_a_0_1_folder_with_a_pickled_object_is_refused_unread(trained, tmp_path, code_running_payload):
    marker = tmp_path / "pwned"
    _write_legacy_folder(trained, tmp_path / "old", {"state_dict": {}, "seed": 0, "split": {}})
    (tmp_path / "old" / "model.pt").write_bytes(pickle.dumps(code_running_payload(marker), protocol=2))
    with pytest.raises(ModelDirectoryError, match="refused without being read"):
        ConditionalSCVI.load(tmp_path / "old")
    assert not marker.exists()
    (tmp_path / "old" / "model.pt").unlink()
    with pytest.raises(ModelDirectoryError, match="lacks model.pt"):
        ConditionalSCVI.load(tmp_path / "old")


def test_old_config_keys_and_train_seed_still_work_with_warnings(cells):
    with pytest.warns(CellsmithDeprecationWarning, match="'lr' is deprecated"):
        assert SCVIConfig(lr=0.01).learning_rate == 0.01
    defaults = SCVIConfig()
    assert (defaults.learning_rate, defaults.weight_decay, defaults.batch_size) == (1e-3, 1e-6, 128)
    assert (defaults.max_epochs, defaults.patience, defaults.num_threads, defaults.seed) == (200, 20, None, 0)
    one = dict(FAST, max_epochs=1)
    with pytest.warns(CellsmithDeprecationWarning, match=r"train\(seed=...\) is deprecated"):
        old = ConditionalSCVI(SCVIConfig(**one)).train(cells, seed=2)
    new = ConditionalSCVI(SCVIConfig(**one, seed=2)).train(cells)
    assert old.config.seed == 2
    assert np.array_equal(old.get_latent(cells), new.get_latent(cells))


def test_bf16_mixed_precision_trains_on_the_cpu_and_predicts_in_float32(cells):
    model = ConditionalSCVI(SCVIConfig(**dict(FAST, max_epochs=1, precision="bf16-mixed"))).train(cells)
    assert model.device.type == "cpu"
    latent = model.get_latent(cells)
    assert latent.dtype == np.float32 and np.isfinite(latent).all()


class _Interrupt(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 2:
            raise RuntimeError("simulated interruption")


def test_resumed_training_ends_at_the_uninterrupted_validation_loss(cells, tmp_path):
    config = SCVIConfig(**{**FAST, "max_epochs": 4, "seed": 3})
    full = ConditionalSCVI(config).train(cells, covariate_keys=["timepoint"])
    with pytest.raises(RuntimeError, match="simulated"):
        ConditionalSCVI(config).train(cells, covariate_keys=["timepoint"], out_dir=tmp_path, callbacks=[_Interrupt()])
    resumed = ConditionalSCVI(config).train(cells, covariate_keys=["timepoint"], out_dir=tmp_path, resume=True)
    assert list(resumed.history["epoch"]) == [0, 1, 2, 3]
    expected, got = full.history["val_loss"].iloc[-1], resumed.history["val_loss"].iloc[-1]
    assert got == pytest.approx(expected, rel=1e-4)


def test_batch_order_is_a_function_of_seed_and_epoch():
    pairing = ControlPairing(np.ones(50, bool), np.zeros(50, int), np.arange(50))
    batches = EpochBatches(np.arange(50), pairing, batch_size=16, seed=7)

    def order(epoch):
        batches.set_epoch(epoch)
        return np.concatenate([t.numpy() for t, _ in batches])

    assert len(batches) == 4
    assert np.array_equal(order(3), order(3))
    assert not np.array_equal(order(3), order(4))
    assert sorted(order(5)) == list(range(50))


def test_perturbation_mode_pairs_perturbed_cells_with_controls_of_their_donor():
    screen = simulate.singlecell(300, 80, cell_types=1, donors=2, perturbations=2, control_fraction=0.4, seed=2)
    model = ConditionalSCVI(SCVIConfig(**FAST)).train(
        screen, perturbation_key="target_gene", control_label="non-targeting"
    )
    sources = model.matched_sources(screen)
    labels, donors = screen.obs["target_gene"].to_numpy(), screen.obs["donor_id"].to_numpy()
    is_control = labels == "non-targeting"
    assert np.array_equal(sources[is_control], np.flatnonzero(is_control))
    assert (labels[sources] == "non-targeting").all()
    assert np.array_equal(donors[sources], donors)
    target = model.setup.categories["target_gene"][1]
    pred = model.predict(screen[is_control], set={"target_gene": target})
    assert (pred.obs["target_gene"] == target).all()
    with pytest.raises(InputError, match="control label 'ctrl'"):
        ConditionalSCVI(SCVIConfig(**FAST)).train(screen, perturbation_key="target_gene", control_label="ctrl")
