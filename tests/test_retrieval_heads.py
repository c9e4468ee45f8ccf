"""Learned heads: balanced batches, the InfoNCE loss, the RetrievalHead model API."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cellsmith.errors import CellsmithDeprecationWarning, ConfigError, InputError
from cellsmith.nn import LossOutput
from cellsmith.retrieval import (
    BalancedBatchSampler,
    PCAEmbedder,
    RetrievalConfig,
    RetrievalHead,
    make_embedder,
    mask_counts,
    split_cells,
)
from cellsmith.retrieval.heads import (
    HeadConfig,
    HeadTrainingPlan,
    RetrievalHeadModule,
    class_probabilities,
    fit_temperature,
    supervised_info_nce,
)
from cellsmith.retrieval.runner import run_retrieval


def test_balanced_batches_hold_several_cells_of_several_perturbations():
    labels = np.repeat(np.arange(10), [3, 50, 50, 50, 50, 50, 50, 50, 50, 50])
    sampler = BalancedBatchSampler(labels, n_perturbations=6, n_cells=5, n_batches=20, seed=0)
    batches = list(sampler)
    assert len(batches) == 20
    for batch in batches:
        counts = np.bincount(labels[batch], minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [5] * 6  # 6 perturbations x 5 cells
    # each epoch differs, and a new sampler with the same seed repeats epoch by epoch
    assert batches != list(sampler)
    assert batches == list(BalancedBatchSampler(labels, n_perturbations=6, n_cells=5, n_batches=20, seed=0))


def test_info_nce_by_hand():
    z = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    loss, n_pos = supervised_info_nce(z, labels, temperature=0.5)
    sims = (z @ z.T / 0.5).numpy()
    expected = []
    for i, j in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        others = [k for k in range(4) if k != i]
        expected.append(-(sims[i, j] - np.log(np.exp(sims[i, others]).sum())))
    assert n_pos == 4
    assert loss.item() == pytest.approx(np.mean(expected), rel=1e-5)


def test_batch_shape_is_validated():
    with pytest.raises(ConfigError, match="perturbations_per_batch"):
        RetrievalConfig.from_yaml(None, head={"perturbations_per_batch": 1})
    with pytest.raises(ValueError):
        HeadConfig(cells_per_perturbation=12)


def test_head_specs():
    config = RetrievalConfig()
    head = make_embedder("head:pca:finetune:classification", config)
    assert head.config.mode == "finetune" and head.config.loss == "classification"
    for bad in ("head:logreg", "head:pca:sideways", "umap"):
        with pytest.raises(InputError):
            make_embedder(bad, config)


@pytest.mark.parametrize("spec", ["head:pca", "head:pca:finetune:classification"])
def test_head_trains_and_embeds(small_screen, spec, tmp_path):
    counts = mask_counts(small_screen, perturbation_key="target_gene", control_label="non-targeting")
    split = split_cells(small_screen.obs["target_gene"], seed=0)
    config = RetrievalConfig(head={"max_epochs": 3, "max_batches_per_epoch": 10, "patience": 0})
    head = make_embedder(spec, config, work_dir=tmp_path)
    head.fit(counts.rows(split.train), split.codes[split.train], val=counts.rows(split.val),
             val_labels=split.codes[split.val], seed=0)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    log = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "val_loss", "val_hit1"} <= set(log)
    z = head.transform(counts.rows(split.test))
    assert z.shape == (split.test.size, config.head.dim)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    assert 0.0 <= head.best_val_hit1 <= 1.0


def _pca_features(small_screen, seed=0):
    """Masked log1p features, the fitted PCA embedder and the split of the small screen."""
    counts = mask_counts(small_screen, perturbation_key="target_gene", control_label="non-targeting")
    split = split_cells(small_screen.obs["target_gene"], seed=seed)
    pca = PCAEmbedder(n_components=10).fit(counts.rows(split.train), None, val=None, val_labels=None, seed=seed)
    rows = {part: pca.features(counts.rows(getattr(split, part))) for part in ("train", "val", "test")}
    labels = {part: split.codes[getattr(split, part)] for part in ("train", "val", "test")}
    return pca, rows, labels


def _head_config(**kw):
    options = {"max_epochs": 2, "max_batches_per_epoch": 5, "patience": 0, "accelerator": "cpu"}
    return HeadConfig(**{**options, **kw})


def _train(pca, rows, labels, config):
    return RetrievalHead(config, backbone=pca.backbone()).train(
        rows["train"], labels["train"], val=rows["val"], val_labels=labels["val"]
    )


def test_retrieval_head_follows_the_model_api(small_screen, tmp_path):
    pca, rows, labels = _pca_features(small_screen)
    model = RetrievalHead(_head_config(mode="finetune"), backbone=pca.backbone())
    assert model.train(rows["train"], labels["train"], val=rows["val"], val_labels=labels["val"]) is model
    z = model.predict(rows["test"])
    assert z.shape == (rows["test"].shape[0], 64) and z.dtype == np.float32
    assert model.epochs_trained == 2 and 0.0 <= model.best_val_hit1 <= 1.0
    assert {"train_loss", "train_positive_pairs", "val_loss", "val_hit1"} <= set(model.history.columns)
    model.save(tmp_path / "head")
    setup = json.loads((tmp_path / "head" / "setup.json").read_text())
    assert setup["backbone"] == {"kind": "linear", "n_inputs": rows["train"].shape[1], "n_outputs": 10}
    assert setup["n_classes"] == 9 and setup["n_features"] == rows["train"].shape[1]
    again = RetrievalHead.load(tmp_path / "head")
    np.testing.assert_array_equal(again.predict(rows["test"]), z)
    assert again.config == model.config and again.epochs_trained == 2
    with pytest.raises(InputError, match=f"trained on {rows['train'].shape[1]} features; got rows of 3"):
        again.predict(np.zeros((2, 3)))
    with pytest.raises(InputError, match="loss classification"):
        again.class_probabilities(z)  # an InfoNCE head has no classifier


def test_temperature_scaling_recovers_the_temperature_of_the_labels():
    rng = np.random.default_rng(0)
    cosines = rng.uniform(-1, 1, size=(4000, 5))
    log_prior = np.log(np.array([0.4, 0.3, 0.1, 0.1, 0.1]))
    # embeddings equal to the class weights: probability e / (e + 4) on the diagonal at T = 1
    p = class_probabilities(np.eye(5), 3 * np.eye(5), 1.0, np.zeros(5))
    np.testing.assert_allclose(np.diag(p), np.e / (np.e + 4), rtol=1e-6)
    logits = cosines / 0.2 + log_prior
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in probs])
    assert 0.15 < fit_temperature(cosines, labels, log_prior) < 0.27


def test_a_classification_head_ranks_classes_with_prior_and_fitted_temperature(small_screen, tmp_path):
    head = {"max_epochs": 2, "max_batches_per_epoch": 5, "accelerator": "cpu"}
    config = RetrievalConfig(
        embedders=["head:pca:head:classification"], libraries=["mean"], queries=["cell"], leakage_gap=False, head=head
    )
    result = run_retrieval(small_screen, config, progress=False)
    assert set(result.metrics["library"]) == {"mean", "class"}
    counts = mask_counts(small_screen, perturbation_key="target_gene", control_label="non-targeting")
    split = split_cells(small_screen.obs["target_gene"].astype(str).to_numpy(), seed=0)
    head = make_embedder("head:pca:head:classification", config)
    head.fit(
        counts.rows(split.train), split.codes[split.train], val=counts.rows(split.val),
        val_labels=split.codes[split.val], seed=0,
    )
    model = head.model
    frequencies = np.bincount(split.codes[split.train]) / split.train.size
    np.testing.assert_allclose(np.exp(model.log_prior), frequencies, rtol=1e-5)
    assert 0.005 <= model.class_temperature <= 2.0
    z = head.transform(counts.rows(split.test))
    p = head.class_scores(z)
    assert p.shape == (split.test.size, frequencies.size) and np.allclose(p.sum(1), 1, atol=1e-5)
    model.save(tmp_path / "head")
    again = RetrievalHead.load(tmp_path / "head")
    np.testing.assert_allclose(again.class_probabilities(z), p, atol=1e-6)


def test_retrieval_head_seed_lives_in_the_config(small_screen):
    pca, rows, labels = _pca_features(small_screen)
    a = _train(pca, rows, labels, _head_config(seed=3)).predict(rows["test"])
    b = _train(pca, rows, labels, _head_config(seed=3)).predict(rows["test"])
    c = _train(pca, rows, labels, _head_config(seed=4)).predict(rows["test"])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_loss_output_and_learning_rates_of_head_and_backbone():
    config = HeadConfig(mode="finetune", learning_rate=1e-2, backbone_learning_rate=1e-5)
    module = RetrievalHeadModule(nn.Linear(6, 4), 4, 3, config)
    out = module.loss(torch.randn(8, 6), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1]))
    assert (
        isinstance(out, LossOutput) and out.loss.dim() == 0 and out.terms["positive_pairs"].item() == 14
    )  # ordered pairs: 6 + 6 + 2
    plan = HeadTrainingPlan(module, config, torch.randn(6, 6), torch.tensor([0, 0, 1, 1, 2, 2]))
    optimiser = plan.configure_optimizers()
    assert [g["lr"] for g in optimiser.param_groups] == [1e-2, 1e-5]
    assert all(g["weight_decay"] == 1e-4 for g in optimiser.param_groups)
    module.backbone.requires_grad_(False)  # mode "head": a frozen backbone is not optimised
    assert [g["lr"] for g in plan.configure_optimizers().param_groups] == [1e-2]


def test_old_learning_rate_keys_load_with_a_warning():
    with pytest.warns(CellsmithDeprecationWarning, match="'lr_head' is deprecated"):
        assert HeadConfig(lr_head=0.01).learning_rate == 0.01
    with pytest.warns(CellsmithDeprecationWarning, match="'lr_backbone' is deprecated"):
        config = RetrievalConfig.from_yaml(None, head={"lr_backbone": 1e-5})
    assert config.head.backbone_learning_rate == 1e-5
    defaults = HeadConfig()
    assert (defaults.weight_decay, defaults.max_epochs, defaults.patience, defaults.progress_bar) == (
        1e-4, 30, 5, False,
    )
