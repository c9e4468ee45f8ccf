import pickle

import numpy as np
import pytest
import torch
from torch import nn

from cellsmith.data import GeneSpace
from cellsmith.errors import CellsmithDeprecationWarning, ConfigError, ModelDirectoryError
from cellsmith.nn import LossOutput, TrainingConfig, TrainingPlan, mlp, resolve_accelerator, torch_threads
from cellsmith.nn.base import CellsmithModel
from cellsmith.nn.saving import ModelFiles, read_manifest


class _Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp(3, [8], 1)

    def forward(self, x):
        return self.net(x)

    def loss(self, batch):
        x, y = batch
        error = (self(x) - y) ** 2
        return LossOutput(error.mean(), {"max_error": error.max()})


class _Toy(CellsmithModel):
    workflow = "toy"
    config_class = TrainingConfig
    command = "toy train"

    def train(self, x, y, *, out_dir=None):
        torch.manual_seed(self.config.seed)
        self.module = _Regression()
        self.genespace = GeneSpace(["a", "b", "c"])
        data = torch.utils.data.TensorDataset(x, y)
        generator = torch.Generator().manual_seed(self.config.seed)
        train = torch.utils.data.DataLoader(data, batch_size=self.config.batch_size, shuffle=True, generator=generator)
        val = torch.utils.data.DataLoader(data, batch_size=64)
        self.fit_plan(TrainingPlan(self.module, self.config), train, val, out_dir=out_dir)
        return self

    def predict(self, x):
        with torch.no_grad():
            return self.module.to(self.device)(x.to(self.device)).cpu().numpy()

    def setup_dict(self):
        return {"n_inputs": 3}

    def restore(self, files: ModelFiles):
        self.module = _Regression()
        self.module.load_state_dict(files.weights)


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=g)
    return x, x.sum(1, keepdim=True)


def _config(**kw):
    options = {"max_epochs": 3, "batch_size": 16, "learning_rate": 0.05, "accelerator": "cpu", "progress_bar": False}
    return TrainingConfig(**{**options, **kw})


def test_torch_threads_restores_the_setting():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_train_logs_every_term_and_round_trips(tmp_path):
    x, y = _data()
    model = _Toy(_config()).train(x, y, out_dir=tmp_path / "run")
    assert isinstance(model, _Toy)
    log = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()[0]
    for column in ("train_loss", "train_max_error", "val_loss", "val_max_error"):
        assert column in log
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert list(model.history["epoch"]) == [0, 1, 2]
    model.save(tmp_path / "model")
    manifest = read_manifest(tmp_path / "model")
    assert manifest["workflow"] == "toy" and manifest["format_version"] == 1
    assert (tmp_path / "model" / "weights.safetensors").is_file()
    again = _Toy.load(tmp_path / "model")
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    assert again.config == model.config and list(again.genespace) == ["a", "b", "c"]


def test_same_seed_same_numbers_other_seed_others():
    x, y = _data()
    a = _Toy(_config(seed=3)).train(x, y).predict(x)
    b = _Toy(_config(seed=3)).train(x, y).predict(x)
    c = _Toy(_config(seed=4)).train(x, y).predict(x)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_max_steps_bounds_training():
    x, y = _data()
    model = _Toy(_config(max_steps=2, patience=0)).train(x, y)
    assert model.history is None or len(model.history) <= 1


def test_old_keys_load_with_a_warning():
    with pytest.warns(CellsmithDeprecationWarning, match="'lr' is deprecated"):
        config = TrainingConfig(lr=0.01)
    assert config.learning_rate == 0.01
    with pytest.warns(CellsmithDeprecationWarning, match="'torch_threads'"):
        assert TrainingConfig(torch_threads=2).num_threads == 2
    with pytest.warns(CellsmithDeprecationWarning, match="negative patience"):
        assert TrainingConfig(patience=-1).patience == 0
    assert TrainingConfig(devices="2").devices == 2


def test_auto_accelerator_runs_on_the_cpu_without_a_gpu():
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert resolve_accelerator(TrainingConfig(accelerator="auto")) == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_accelerator(TrainingConfig(accelerator="gpu"))
        with pytest.raises(ConfigError, match="16-mixed needs a GPU"):
            resolve_accelerator(TrainingConfig(accelerator="cpu", precision="16-mixed"))


def test_auto_accelerator_trains(tmp_path):
    x, y = _data()
    model = _Toy(_config().model_copy(update={"accelerator": "auto"})).train(x, y)
    assert model.predict(x).shape == (64, 1)


def test_bf16_mixed_precision_trains_on_the_cpu():
    x, y = _data()
    model = _Toy(_config(precision="bf16-mixed")).train(x, y)
    assert np.isfinite(model.predict(x)).all()



def test_a_pickled_weights_file_is_refused_and_never_run(tmp_path, code_running_payload):
    x, y = _data()
    _Toy(_config(max_epochs=1)).train(x, y).save(tmp_path / "model")
    marker = tmp_path / "pwned"
    (tmp_path / "model" / "weights.safetensors").write_bytes(pickle.dumps(code_running_payload(marker)))
    with pytest.raises(ModelDirectoryError, match="not a safetensors file"):
        _Toy.load(tmp_path / "model")
    assert not marker.exists()


def test_folders_of_another_workflow_newer_format_or_incomplete_are_refused(tmp_path):
    x, y = _data()
    _Toy(_config(max_epochs=1)).train(x, y).save(tmp_path / "model")
    manifest = tmp_path / "model" / "cellsmith_model.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"toy"', '"scvi"'))
    with pytest.raises(ModelDirectoryError, match="holds a 'scvi' model"):
        _Toy.load(tmp_path / "model")
    manifest.write_text(text.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ModelDirectoryError, match="model format 99"):
        _Toy.load(tmp_path / "model")
    manifest.write_text(text)
    (tmp_path / "model" / "setup.json").unlink()
    with pytest.raises(ModelDirectoryError, match="setup.json missing"):
        _Toy.load(tmp_path / "model")
    with pytest.raises(ModelDirectoryError, match="does not exist"):
        _Toy.load(tmp_path / "nowhere")


def test_save_keeps_other_entries_and_replaces_the_model(tmp_path):
    x, y = _data()
    target = tmp_path / "model"
    (target / "training").mkdir(parents=True)
    (target / "training" / "keep.txt").write_text("x")
    _Toy(_config(max_epochs=1)).train(x, y).save(target)
    assert (target / "training" / "keep.txt").read_text() == "x"
    assert not list(tmp_path.glob(".model.*"))


def test_max_steps_before_the_first_validation_with_early_stopping():
    x, y = _data()
    model = _Toy(_config(max_steps=2, patience=3)).train(x, y)
    assert model.module is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_trained_model_loads_and_predicts_on_a_cpu_machine(tmp_path):
    x, y = _data()
    _Toy(_config(max_epochs=1)).train(x, y).save(tmp_path / "model")
    config = tmp_path / "model" / "config.yaml"
    config.write_text(config.read_text().replace("accelerator: cpu", "accelerator: gpu"))
    model = _Toy.load(tmp_path / "model")
    assert model.config.accelerator == "auto" and model.predict(x).shape == (64, 1)
