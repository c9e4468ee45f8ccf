"""Write the scGPT verification fixture with scGPT 0.2.4's own code (run in its side venv).

    bash benchmarks/make_peer_venv.sh scgpt            # /tmp/venv-scgpt: torch 2.3.1, torchtext 0.18, scgpt 0.2.4
    /tmp/venv-scgpt/bin/python benchmarks/make_scgpt_fixture.py \
        --h5ad ../shared/data/papalexi2021_thp1_eccite.h5ad --out tests/data/scgpt_fixture

The vocabulary is the h5ad's genes but every tenth one, in a seeded random order (so that a run
on that screen reports a coverage below 100%); scGPT's loader appends the special tokens, as
for the published ``vocab.json``. The script

1. builds a small randomly initialised ``scgpt.model.TransformerModel`` (every parameter
   perturbed, so that layer norms and biases are exercised) and saves the official checkpoint
   folder: ``args.json``, ``vocab.json``, ``best_model.pt`` (a state dict);
2. embeds a fixed count matrix with ``scgpt.tasks.embed_data`` (vocabulary filter, binning,
   ``<cls>`` + padding, the model's ``<cls>`` output, L2 normalisation). Every row has distinct
   non-zero counts and fewer genes than ``max_length``, so scGPT's two random steps (tie
   breaking in binning, gene sampling beyond ``max_length``) draw nothing that matters;
3. runs ``TransformerModel._encode`` on one hand-made padded batch (raw ``<cls>`` outputs);
4. bins a count matrix full of ties with ``scgpt.preprocess.binning`` after
   ``np.random.seed(BIN_SEED)``, cell after cell as scGPT's ``DataCollator`` does.

Outputs land in ``reference.npz`` beside the checkpoint; ``tests/test_scgpt_model.py`` checks
cellsmith's module against them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

BIN_SEED = 7
ARGS = {
    "embsize": 32, "nheads": 4, "d_hid": 64, "nlayers": 2, "n_layers_cls": 3, "dropout": 0.2, "pad_token": "<pad>",
    "pad_value": -2, "mask_value": -1, "input_style": "binned", "input_emb_style": "continuous", "n_bins": 51,
    "max_seq_len": 1200, "fast_transformer": False, "MVC": True,
}


def build_model(vocab):
    from scgpt.model import TransformerModel

    torch.manual_seed(0)
    model = TransformerModel(
        ntoken=len(vocab), d_model=ARGS["embsize"], nhead=ARGS["nheads"], d_hid=ARGS["d_hid"], nlayers=ARGS["nlayers"],
        nlayers_cls=ARGS["n_layers_cls"], n_cls=1, vocab=vocab, dropout=ARGS["dropout"], pad_token="<pad>",
        pad_value=ARGS["pad_value"], do_mvc=True, do_dab=False, use_batch_labels=False, domain_spec_batchnorm=False,
        explicit_zero_prob=False, use_fast_transformer=False, pre_norm=False,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def distinct_counts(rng: np.random.Generator, n_cells: int, genes: list[str]) -> np.ndarray:
    """Cells x genes, each cell's non-zero counts distinct (no tie to break at random)."""
    x = np.zeros((n_cells, len(genes)), dtype=np.float32)
    for i in range(n_cells):
        n = int(rng.integers(5, len(genes) // 2))
        cols = rng.choice(len(genes), n, replace=False)
        x[i, cols] = rng.permutation(np.arange(1, n + 1) * rng.integers(1, 4))
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h5ad", type=Path, required=True, help="screen whose genes make the vocabulary")
    parser.add_argument("--out", type=Path, required=True)
    opts = parser.parse_args()
    from scgpt.preprocess import binning
    from scgpt.tasks import embed_data
    from scgpt.tokenizer import GeneVocab

    names = ad.read_h5ad(opts.h5ad, backed="r").var_names
    genes = [str(g) for g in np.random.default_rng(1).permutation([g for i, g in enumerate(names) if i % 10 != 9])]
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "vocab.json").write_text(json.dumps({g: i for i, g in enumerate(genes)}))
    (opts.out / "args.json").write_text(json.dumps(ARGS, indent=1))
    vocab = GeneVocab.from_file(opts.out / "vocab.json")
    for token in ("<pad>", "<cls>", "<eoc>"):
        if token not in vocab:
            vocab.append_token(token)
    model = build_model(vocab)
    torch.save(model.state_dict(), opts.out / "best_model.pt")

    rng = np.random.default_rng(0)
    # 2. embed_data: 100 vocabulary genes and 20 unknown ones, shuffled
    input_genes = list(rng.permutation([*genes[:100], *(f"NOT_IN_VOCAB_{i}" for i in range(20))]))
    counts = distinct_counts(rng, 24, input_genes)
    adata = ad.AnnData(counts, var=pd.DataFrame(index=input_genes))
    embedded = embed_data(adata, opts.out, gene_col="index", max_length=ARGS["max_seq_len"], batch_size=8,
                          device="cpu", use_fast_transformer=False, return_new_adata=True)

    # 3. _encode on a padded batch: <cls>, then bins of 2..6 genes, <pad> after
    lengths = [6, 2, 4]
    ids = np.full((3, 7), vocab["<pad>"], dtype=np.int64)
    values = np.full((3, 7), ARGS["pad_value"], dtype=np.float32)
    ids[:, 0] = vocab["<cls>"]
    for row, n in enumerate(lengths):
        ids[row, 1:n + 1] = rng.choice(len(genes), n, replace=False)
        values[row, 1:n + 1] = rng.integers(1, 51, n)
    with torch.no_grad():
        ids_t = torch.from_numpy(ids)
        encoded = model._encode(ids_t, torch.from_numpy(values), src_key_padding_mask=ids_t.eq(vocab["<pad>"]))

    # 4. binning with ties (Poisson counts), scGPT's way: the non-zero values of each cell
    tied = rng.poisson(1.5, size=(30, 80)).astype(np.float32)
    tied[3] = 0  # an empty cell draws nothing
    np.random.seed(BIN_SEED)
    binned = np.zeros(tied.shape, dtype=np.int64)
    for i, row in enumerate(tied):
        nonzero = np.flatnonzero(row)
        if nonzero.size:
            binned[i, nonzero] = binning(torch.from_numpy(row[nonzero]), n_bins=ARGS["n_bins"]).numpy()

    np.savez_compressed(
        opts.out / "reference.npz", input_genes=np.array(input_genes), counts=counts,
        cls_embeddings=np.asarray(embedded.X, dtype=np.float32), encode_ids=ids, encode_values=values,
        encode_cls=encoded[:, 0, :].numpy(), tied_counts=tied, tied_bins=binned, bin_seed=BIN_SEED,
    )
    versions = {"torch": torch.__version__, "scgpt": __import__("scgpt").__version__, "numpy": np.__version__}
    (opts.out / "versions.json").write_text(json.dumps(versions, indent=1))
    print("wrote", opts.out, versions)


if __name__ == "__main__":
    main()
