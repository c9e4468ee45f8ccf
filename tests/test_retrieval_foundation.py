"""The foundation embedder on cellsmith's scGPT: vocabulary mapping, masked counts in, heads on
it (frozen, fine-tuned, last layers, LoRA), saving, and the checkpoint loader's refusals."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cellsmith.data import normalize
from cellsmith.errors import CellsmithError
from cellsmith.models.scgpt import ScGPT, ScGPTCheckpoint, ScGPTConfig, bin_rows
from cellsmith.models.scgpt.checkpoint import read_state_dict
from cellsmith.retrieval import RetrievalConfig, RetrievalHead, RetrievalWarning, factory, make_embedder, mask_counts
from cellsmith.retrieval.foundation import CLSEncoder, FoundationEmbedder, load_scgpt, map_genes
from cellsmith.retrieval.runner import run_retrieval

FIXTURE = Path(__file__).parent / "data" / "scgpt_fixture"


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
    with pytest.raises(CellsmithError, match="LoRA adapts a foundation transformer"):
        make_embedder("head:pca:lora", RetrievalConfig())


def test_the_fixture_checkpoint_loads_through_the_factory():
    embedder = make_embedder("foundation", RetrievalConfig(foundation={"checkpoint": FIXTURE}))
    assert isinstance(embedder.checkpoint.model, ScGPT) and embedder.max_length == 1200
    assert embedder.checkpoint.vocab["<cls>"] == len(embedder.checkpoint.vocab) - 2  # appended, as scGPT does


@pytest.fixture
def tiny_foundation(small_screen, monkeypatch):
    """A 1-layer scGPT knowing 150 of the screen's 200 genes, as the embedder ``tiny``."""
    genes = list(small_screen.var_names[:150])
    vocab = {g: i for i, g in enumerate(genes)} | {"<pad>": 150, "<cls>": 151, "<eoc>": 152}
    torch.manual_seed(0)
    model = ScGPT(ScGPTConfig(n_tokens=153, d_model=16, n_heads=2, d_hid=16, n_layers=2, pad_id=150)).eval()
    checkpoint = ScGPTCheckpoint(model, vocab, {"max_seq_len": 40}, [])
    monkeypatch.setitem(
        factory._BASES, "tiny", lambda name, cfg: FoundationEmbedder(name, checkpoint, min_coverage=0.5)
    )
    return model


def test_adapter_pipeline_masks_before_binning(small_screen, tiny_foundation):
    counts = mask_counts(small_screen, perturbation_key="target_gene", control_label="non-targeting")
    embedder = make_embedder("tiny", RetrievalConfig())
    labels = np.zeros(counts.n_rows, dtype=int)
    embedder.fit(counts, labels, val=counts, val_labels=labels, seed=0)
    assert embedder.mapping.coverage == 0.75 and embedder.vocabulary.startswith("150/200 genes")
    kept = embedder.mapping.vocab_ids >= 0
    binned = bin_rows(normalize.log1p_normalize(counts.csr())[:20, kept], rng=np.random.RandomState(0))
    features = embedder.features(counts.rows(np.arange(20))).take(np.arange(20))
    # at most max_length - 1 = 39 genes per cell, each with its bin; the others left out (0)
    assert ((features > 0).sum(1) == np.minimum((binned > 0).sum(1), 39)).all()
    assert (features[features > 0] == binned[features > 0]).all()
    masked_columns = np.isin(np.asarray(counts.genes)[kept], counts.masked_genes)
    assert masked_columns.any() and not features[:, masked_columns].any()
    z = embedder.transform(counts.rows(np.arange(20)))
    assert z.shape == (20, 16) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)


def test_foundation_heads_run_in_the_benchmark_and_train_what_their_mode_says(small_screen, tiny_foundation):
    pytest.importorskip("peft", reason="LoRA heads need peft (a cellsmith dependency)")
    config = RetrievalConfig(
        embedders=["tiny", "head:tiny:finetune", "head:tiny:lora"],
        libraries=["mean"],
        queries=["pseudobulk:10"],
        leakage_gap=False,
        head={"max_epochs": 1, "max_batches_per_epoch": 3},
    )
    before = {k: v.clone() for k, v in tiny_foundation.state_dict().items()}
    result = run_retrieval(small_screen, config, progress=False)
    assert set(result.metrics["embedder"]) == {"tiny", "head:tiny:finetune", "head:tiny:lora"}
    assert result.metrics[["exact_hit@1", "mrr"]].notna().all().all()
    assert {f["vocabulary"] for f in result.info["fits"]} == {
        "150/200 genes in the model vocabulary (75.0%; 75.0% before 0 aliases)"
    }
    # fine-tuning trains a copy: the shared frozen model is unchanged
    assert all(torch.equal(before[k], v) for k, v in tiny_foundation.state_dict().items())


@pytest.mark.parametrize(("mode", "extra"), [("finetune", {"trainable_layers": 1}), ("lora", {"lora_rank": 16})])
def test_last_layers_and_lora_heads_save_and_load(small_screen, tiny_foundation, tmp_path, mode, extra):
    if mode == "lora":
        pytest.importorskip("peft", reason="LoRA heads need peft (a cellsmith dependency)")
    counts = mask_counts(small_screen, perturbation_key="target_gene", control_label="non-targeting")
    codes = small_screen.obs["target_gene"].cat.codes.to_numpy()
    config = RetrievalConfig(head={"max_epochs": 1, "max_batches_per_epoch": 2, "accelerator": "cpu", **extra})
    head = make_embedder(f"head:tiny:{mode}", config)
    head.fit(
        counts.rows(np.arange(0, 1500, 2)),
        codes[::2],
        val=counts.rows(np.arange(1, 300, 2)),
        val_labels=codes[1:300:2],
        seed=0,
    )
    module = head.model.module
    trainable = {n for n, p in module.backbone.named_parameters() if p.requires_grad}
    if mode == "finetune":  # only the last of the two layers
        assert trainable and all(n.startswith("model.transformer_encoder.layers.1.") for n in trainable)
    else:  # only adapters, of rank 16
        assert trainable and all("lora_" in n for n in trainable)
        assert module.backbone.model.transformer_encoder.layers[0].linear1.lora_A["default"].weight.shape[0] == 16
    head.model.save(tmp_path / "head")
    backbone = json.loads((tmp_path / "head" / "setup.json").read_text())["backbone"]
    assert backbone["kind"] == "foundation" and backbone["n_genes"] == 150
    assert backbone["lora_rank"] == (16 if mode == "lora" else None)
    again = RetrievalHead.load(tmp_path / "head")
    with pytest.raises(CellsmithError, match="saved by an earlier cellsmith"):
        CLSEncoder.from_spec({"kind": "foundation", "model": {"class": "scgpt"}, "n_genes": 3})
    test = counts.rows(np.arange(1, 40, 2))
    np.testing.assert_allclose(again.predict(head.base.features(test)), head.transform(test), atol=1e-6)


def test_a_checkpoint_is_read_as_a_state_dict_only(tmp_path, code_running_payload):
    good = tmp_path / "good.pt"
    torch.save(nn.Linear(2, 2).state_dict(), good)
    assert set(read_state_dict(good)) == {"weight", "bias"}
    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, folder)
    bad = folder / "best_model.pt"
    torch.save({"weight": code_running_payload(marker)}, bad)
    with pytest.raises(CellsmithError, match=f"checkpoint {bad} cannot be read as a state dict"):
        load_scgpt(folder)
    assert not marker.exists()
    torch.save(nn.Linear(2, 2), bad)  # a whole pickled module, not its state dict
    with pytest.raises(CellsmithError, match="best_model.pt cannot be read as a state dict"):
        read_state_dict(bad)
    torch.save([torch.zeros(1)], bad)
    with pytest.raises(CellsmithError, match="holds a list, not a state dict"):
        read_state_dict(bad)
