"""Learned heads: balanced batches, the InfoNCE loss, training through make_trainer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cellsmith.errors import ConfigError, InputError
from cellsmith.retrieval import BalancedBatchSampler, RetrievalConfig, make_embedder, mask_counts, split_cells
from cellsmith.retrieval.heads import HeadConfig, supervised_info_nce


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
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file() and (tmp_path / "logs" / "metrics.csv").is_file()
    z = head.transform(counts.rows(split.test))
    assert z.shape == (split.test.size, config.head.dim)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    assert 0.0 <= head.best_val_hit1 <= 1.0
