"""Time to embed cells with a scGPT-sized model (12 layers, 512 wide, 8 heads; acceptance 4).

A randomly initialised :class:`cellsmith.models.scgpt.ScGPT` of the whole-human checkpoint's
shape (a 60,697-token vocabulary) embeds simulated cells of 20,000 genes with ``--expressed``
expressed genes each (the whole-human ``max_seq_len`` of 1,200 keeps 1,199 of them), through
the foundation embedder's full path: masking, log1p(CP10k), binning, gene choice, ``<cls>``.

    .venv/bin/python benchmarks/scgpt_embed_speed.py --cells 256 [--device cuda] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from cellsmith.models.scgpt import ScGPT, ScGPTCheckpoint, ScGPTConfig
from cellsmith.retrieval import mask_counts
from cellsmith.retrieval.foundation import FoundationEmbedder

from _common import machine, today

N_TOKENS = 60_697


def screen(n_cells: int, n_genes: int, expressed: int, seed: int) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_cells), expressed)
    cols = np.concatenate([rng.choice(n_genes, expressed, replace=False) for _ in range(n_cells)])
    counts = sp.csr_matrix((rng.geometric(0.4, rows.size).astype(np.float32), (rows, cols)), shape=(n_cells, n_genes))
    obs = {"target_gene": np.where(np.arange(n_cells) % 2 == 0, "non-targeting", "GENE1")}
    return ad.AnnData(counts, obs=obs, var={"gene": [f"GENE{i}" for i in range(n_genes)]}).copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=256)
    parser.add_argument("--expressed", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    opts = parser.parse_args()
    adata = screen(opts.cells, 20_000, opts.expressed, seed=0)
    adata.var_names = adata.var["gene"].astype(str)
    vocab = {f"GENE{i}": i for i in range(N_TOKENS - 3)} | {
        "<pad>": N_TOKENS - 3,
        "<cls>": N_TOKENS - 2,
        "<eoc>": N_TOKENS - 1,
    }
    torch.manual_seed(0)
    model = ScGPT(ScGPTConfig(n_tokens=N_TOKENS, pad_id=vocab["<pad>"])).eval().to(opts.device)
    checkpoint = ScGPTCheckpoint(model, vocab, {"max_seq_len": 1200}, [])
    counts = mask_counts(adata, perturbation_key="target_gene", control_label="non-targeting")
    labels = np.zeros(counts.n_rows, dtype=int)
    embedder = FoundationEmbedder("foundation", checkpoint, batch_size=opts.batch_size)
    embedder.fit(counts, labels, val=counts, val_labels=labels, seed=0)
    embedder.transform(counts.rows(np.arange(min(8, opts.cells))))  # warm-up
    start = time.perf_counter()
    z = embedder.transform(counts)
    seconds = time.perf_counter() - start
    print(f"{today()} {machine()}")
    print(
        f"{opts.cells} cells x {opts.expressed} expressed genes -> {z.shape}, device {opts.device}, "
        f"batch {opts.batch_size}: {seconds:.1f} s ({1000 * seconds / opts.cells:.0f} ms per cell; "
        f"{100_000 * seconds / opts.cells / 3600:.1f} h per 100,000 cells at this rate)"
    )


if __name__ == "__main__":
    main()
