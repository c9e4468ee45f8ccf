"""The scvi-tools side of benchmarks/scale_scvi.py (run in a venv with scvi-tools installed).

Reads the h5ad into memory, sets it up with no batch key (as ``cellsmith scvi train --no-batch``),
trains scvi-tools SCVI (ZINB, latent 10, one hidden layer of 128, batch 128) for ``--max-steps``
steps and prints, as JSON, the steps and the seconds of ``model.train``.

    /tmp/venv-scvi/bin/python benchmarks/scvi_scale_peer.py /work/bench-data/atlas_1000000.h5ad --max-steps 300
"""

from __future__ import annotations

import argparse
import json
import time

import anndata as ad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import scvi  # only in the peer's venv

    scvi.settings.seed = args.seed
    adata = ad.read_h5ad(args.data)
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata, n_latent=10, n_hidden=128, n_layers=1, dropout_rate=0.1, gene_likelihood="zinb")
    start = time.perf_counter()
    model.train(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        early_stopping=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    seconds = time.perf_counter() - start
    steps = int(model.trainer.global_step) if getattr(model, "trainer", None) is not None else args.max_steps
    print(json.dumps({"side": "scvi-tools", "version": scvi.__version__, "steps": steps, "train_seconds": seconds}))


if __name__ == "__main__":
    main()
