"""The foundation-model adapter: binning by hand, vocabulary mapping, a tiny transformer."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from cellsmith.data import normalize
from cellsmith.errors import CellsmithError
from cellsmith.retrieval import RetrievalConfig, RetrievalHead, RetrievalWarning, make_embedder, mask_counts
from cellsmith.retrieval import factory
from cellsmith.retrieval.foundation import (
    FoundationEmbedder, TinyFoundationModel, bin_values, load_scgpt, map_genes, read_state_dict,
)
from cellsmith.retrieval.runner import run_retrieval


def test_binning_by_hand():
    # 5 bins: cut points are the 0, 1/3, 2/3, 1 quantiles of the non-zeros [1, 2, 3, 4].
    assert bin_values(np.array([[0.0, 1, 2, 3, 4]]), n_bins=5).tolist() == [[0, 1, 2, 3, 4]]
    # 51 bins: 25 of the 50 cut points equal 5 (the lower half of [5, 5, 10]), all are <= 10.
    assert bin_values(np.array([[0.0, 5, 5, 10]])).tolist() == [[0, 25, 25, 50]]
    # each row on its own scale; an all-zero row stays in bin 0
    assert bin_values(np.array([[0.0, 0.0], [100.0, 0.0]])).tolist() == [[0, 0], [50, 0]]


def test_gene_mapping_reports_coverage_and_aliases():
    vocab = {"<pad>": 0, "<cls>": 1, "GENE1": 2, "GENE2": 3, "ENSG0001": 4}
    full = map_genes(["GENE1", "GENE2"], vocab)
    assert full.coverage == 1.0 and full.aliased == {}
    with pytest.warns(RetrievalWarning, match="covers only 3/4 genes"):
        mapping = map_genes(["GENE1", "gene2", "ENSG0001.5", "UNKNOWN"], vocab)
    assert mapping.vocab_ids.tolist() == [2, 3, 4, -1]
    assert mapping.coverage_direct == 0.25 and mapping.coverage == 0.75
    assert mapping.aliased == {"gene2": "GENE2", "ENSG0001.5": "ENSG0001"}
    user = map_genes(["GENE1", "gene2", "ENSG0001.5", "UNKNOWN"], vocab, aliases={"UNKNOWN": "GENE1"})
    assert user.coverage == 1.0


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CellsmithError, match="--foundation-checkpoint DIR.*args.json, vocab.json, best_model.pt"):
        make_embedder("foundation", RetrievalConfig())
    with pytest.raises(CellsmithError, match="lacks args.json, vocab.json, best_model.pt"):
        load_scgpt(tmp_path)


@pytest.fixture
def tiny_foundation(small_screen, monkeypatch):
    vocab = {"<pad>": 0, "<cls>": 1, **{g: i + 2 for i, g in enumerate(small_screen.var_names[:150])}}
    torch.manual_seed(0)
    model = TinyFoundationModel(vocab, d_model=16, n_heads=2, n_layers=1)
    monkeypatch.setitem(
        factory._BASES, "tiny", lambda name, cfg: FoundationEmbedder(name, model, min_coverage=0.5)
    )
    return model


def test_adapter_pipeline_masks_before_binning(small_screen, tiny_foundation):
    counts = mask_counts(small_screen, perturbation_key="target_gene", control_label="non-targeting")
    embedder = make_embedder("tiny", RetrievalConfig())
    labels = np.zeros(counts.n_rows, dtype=int)
    embedder.fit(counts, labels, val=counts, val_labels=labels, seed=0)
    assert embedder.mapping.coverage == 0.75
    kept = embedder.mapping.vocab_ids >= 0
    expected = bin_values(normalize.log1p_normalize(counts.csr()).toarray()[:, kept])
    features = embedder.features(counts.rows(np.arange(20))).take(np.arange(20))
    np.testing.assert_array_equal(features, expected[:20])
    masked_columns = np.isin(np.asarray(counts.genes)[kept], counts.masked_genes)
    assert masked_columns.any() and not features[:, masked_columns].any()
    assert embedder.transform(counts.rows(np.arange(20))).shape == (20, 16)


def test_tiny_foundation_and_finetuned_head_run_in_the_benchmark(small_screen, tiny_foundation):
    config = RetrievalConfig(
        embedders=["tiny", "head:tiny:finetune"], libraries=["mean"], queries=["pseudobulk:10"],
        leakage_gap=False, head={"max_epochs": 1, "max_batches_per_epoch": 3},
    )
    before = {k: v.clone() for k, v in tiny_foundation.state_dict().items()}
    result = run_retrieval(small_screen, config, progress=False)
    assert set(result.metrics["embedder"]) == {"tiny", "head:tiny:finetune"}
    assert result.metrics[["exact_hit@1", "mrr"]].notna().all().all()
    # fine-tuning trains a copy: the shared frozen model is unchanged
    assert all(torch.equal(before[k], v) for k, v in tiny_foundation.state_dict().items())


def test_a_finetuned_foundation_head_saves_and_loads(small_screen, tiny_foundation, tmp_path):
    counts = mask_counts(small_screen, perturbation_key="target_gene", control_label="non-targeting")
    codes = small_screen.obs["target_gene"].cat.codes.to_numpy()
    config = RetrievalConfig(head={"max_epochs": 1, "max_batches_per_epoch": 2, "accelerator": "cpu"})
    head = make_embedder("head:tiny:finetune", config)
    head.fit(counts.rows(np.arange(0, 1500, 2)), codes[::2], val=counts.rows(np.arange(1, 300, 2)),
             val_labels=codes[1:300:2], seed=0)
    head.model.save(tmp_path / "head")
    backbone = json.loads((tmp_path / "head" / "setup.json").read_text())["backbone"]
    assert backbone["kind"] == "foundation" and backbone["model"]["class"] == "tiny" and backbone["n_genes"] == 150
    again = RetrievalHead.load(tmp_path / "head")
    test = counts.rows(np.arange(1, 40, 2))
    np.testing.assert_array_equal(again.predict(head.base.features(test)), head.transform(test))



def test_a_checkpoint_is_read_as_a_state_dict_only(tmp_path, code_running_payload):
    good = tmp_path / "good.pt"
    torch.save(nn.Linear(2, 2).state_dict(), good)
    assert set(read_state_dict(good)) == {"weight", "bias"}
    marker = tmp_path / "pwned"
    bad = tmp_path / "best_model.pt"
    torch.save({"weight": code_running_payload(marker)}, bad)
    with pytest.raises(CellsmithError, match=f"checkpoint {bad} cannot be read as a state dict"):
        read_state_dict(bad)
    assert not marker.exists()
    torch.save(nn.Linear(2, 2), bad)  # a whole pickled module, not its state dict
    with pytest.raises(CellsmithError, match="best_model.pt cannot be read as a state dict"):
        read_state_dict(bad)
    torch.save([torch.zeros(1)], bad)
    with pytest.raises(CellsmithError, match="holds a list, not a state dict"):
        read_state_dict(bad)
