"""cellsmith's scGPT against scGPT 0.2.4's own code (fixture of benchmarks/make_scgpt_fixture.py).

``tests/data/scgpt_fixture`` holds a small randomly initialised official ``TransformerModel``
saved in the official checkpoint format, and what scGPT's code computed with it: ``<cls>``
embeddings by ``scgpt.tasks.embed_data``, raw ``<cls>`` outputs of ``_encode`` on a padded
batch, and ``scgpt.preprocess.binning`` of counts full of ties.
"""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellsmith.data.normalize import log1p_normalize
from cellsmith.errors import ModelDirectoryError
from cellsmith.models.scgpt import bin_rows, choose_genes, load_checkpoint, map_state_dict, tokenize
from cellsmith.models.scgpt.checkpoint import read_state_dict

FIXTURE = Path(__file__).parent / "data" / "scgpt_fixture"


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(FIXTURE)


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE / "reference.npz"))


def test_cls_embeddings_equal_scgpt_embed_data(checkpoint, reference):
    vocab = checkpoint.vocab
    genes = [str(g) for g in reference["input_genes"]]
    in_vocab = np.array([g in vocab for g in genes])
    # the pipeline of the foundation embedder: normalize_total 1e4 + log1p, vocabulary genes, bins
    values = log1p_normalize(sp.csr_matrix(reference["counts"]))[:, in_vocab]
    bins = bin_rows(values, rng=np.random.RandomState(0))
    gene_ids = torch.tensor([vocab[g] for g, kept in zip(genes, in_vocab, strict=True) if kept])
    ids, vals, padding = tokenize(torch.from_numpy(bins), gene_ids, cls_id=vocab["<cls>"], pad_id=vocab["<pad>"],
                                  pad_value=checkpoint.pad_value)
    with torch.no_grad():
        ours = torch.nn.functional.normalize(checkpoint.model.cell_embedding(ids, vals, padding), dim=-1).numpy()
    np.testing.assert_allclose(ours, reference["cls_embeddings"], atol=1e-5, rtol=0)


def test_encoder_equals_scgpt_encode_on_a_padded_batch(checkpoint, reference):
    with torch.no_grad():
        ours = checkpoint.model.cell_embedding(torch.from_numpy(reference["encode_ids"]),
                                               torch.from_numpy(reference["encode_values"]))
    np.testing.assert_allclose(ours.numpy(), reference["encode_cls"], atol=1e-5, rtol=0)


def test_binning_equals_scgpt_with_ties_on_counts_and_on_log1p(reference):
    counts, seed = reference["tied_counts"], int(reference["bin_seed"])
    assert (reference["tied_bins"][counts > 0] >= 1).all() and reference["tied_bins"].max() == 50
    np.testing.assert_array_equal(bin_rows(counts, rng=np.random.RandomState(seed)), reference["tied_bins"])
    # normalize_total and log1p are monotone per cell: the same bins, ties and draws included
    normalized = log1p_normalize(sp.csr_matrix(counts))
    np.testing.assert_array_equal(bin_rows(normalized, rng=np.random.RandomState(seed)), reference["tied_bins"])


def test_flash_attention_keys_map_to_torch_attention(checkpoint):
    state = read_state_dict(FIXTURE / "best_model.pt")
    flash = {k.replace("self_attn.in_proj_", "self_attn.Wqkv."): v for k, v in state.items()}
    assert any(".Wqkv.weight" in k for k in flash)
    mapped, skipped = map_state_dict(flash, checkpoint.model, source="flash")
    assert all(torch.equal(mapped[k], v) for k, v in checkpoint.model.state_dict().items())
    assert skipped and all(k.startswith(("decoder.", "mvc_decoder.", "cls_decoder.")) for k in skipped)


def test_unexpected_and_missing_keys_are_refused_with_their_names(checkpoint):
    state = read_state_dict(FIXTURE / "best_model.pt")
    extra = {**state, "transformer_encoder.layers.9.linear1.weight": torch.zeros(1)}
    with pytest.raises(ModelDirectoryError, match=r"unexpected keys: transformer_encoder\.layers\.9\.linear1\.weight"):
        map_state_dict(extra, checkpoint.model, source="extra")
    lacking = {k: v for k, v in state.items() if k != "value_encoder.norm.bias"}
    with pytest.raises(ModelDirectoryError, match=r"missing keys: value_encoder\.norm\.bias"):
        map_state_dict(lacking, checkpoint.model, source="lacking")
    with pytest.raises(ModelDirectoryError, match="trained with batch labels"):
        map_state_dict({**state, "batch_encoder.embedding.weight": torch.zeros(2, 2)}, checkpoint.model, source="b")


def test_cells_beyond_max_length_keep_a_seeded_random_subset():
    binned = np.array([[3, 0, 1, 2, 5, 4], [0, 0, 1, 0, 0, 2]])
    chosen = choose_genes(binned, 3, np.random.default_rng(0))
    assert (chosen[0] > 0).sum() == 3 and np.isin(chosen[0][chosen[0] > 0], binned[0]).all()
    np.testing.assert_array_equal(chosen[1], binned[1])
    np.testing.assert_array_equal(chosen, choose_genes(binned, 3, np.random.default_rng(0)))
