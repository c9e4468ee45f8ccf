"""The scvi-tools side of benchmarks/scvi_speed.py (run in a venv with scvi-tools installed).

Trains scvi-tools SCVI on the prepared data's training cells and writes, as JSON, the wall
time of every epoch and the held-out reconstruction NLL (posterior-mean latent, observed
library size, ZINB log-likelihood summed over genes, averaged over held-out cells).

    /tmp/venv-scvi/bin/python benchmarks/scvi_speed_peer.py PREPARED.h5ad OUT.json \
        --epochs 50 --kl-warmup 50 --threads 1 --seed 0 --accelerator auto --precision 32
"""

from __future__ import annotations

import argparse
import json
import time

import anndata as ad
import lightning as L
import numpy as np
import torch


class EpochTimer(L.Callback):
    """Wall time of every training epoch (its validation pass included); shared by both sides."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        if torch.cuda.is_available():  # queued GPU work belongs to this epoch
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--kl-warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="0: leave scvi-tools' default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    parser.add_argument("--precision", default="32", help="32, bf16-mixed or 16-mixed")
    args = parser.parse_args()
    import scvi  # only in the peer's venv

    scvi.settings.seed = args.seed
    if args.threads > 0:
        scvi.settings.num_threads = args.threads
    threads = torch.get_num_threads()
    adata = ad.read_h5ad(args.data)
    train = adata[adata.obs["split"] == "train"].copy()
    test = adata[adata.obs["split"] == "test"].copy()
    scvi.model.SCVI.setup_anndata(train)
    model = scvi.model.SCVI(train, n_latent=10, n_hidden=128, n_layers=1, dropout_rate=0.1, gene_likelihood="zinb")
    timer = EpochTimer()
    start = time.perf_counter()
    model.train(
        max_epochs=args.epochs,
        batch_size=128,
        train_size=0.9,
        early_stopping=False,
        plan_kwargs={"n_epochs_kl_warmup": args.kl_warmup},
        callbacks=[timer],
        enable_progress_bar=False,
        accelerator=args.accelerator,
        precision=args.precision,
    )
    total = time.perf_counter() - start

    model.module.eval()
    device = model.device
    x = torch.tensor(np.asarray(test.X.toarray() if hasattr(test.X, "toarray") else test.X), dtype=torch.float32)
    x = x.to(device)
    with torch.no_grad():
        z = torch.tensor(model.get_latent_representation(test, give_mean=True), dtype=torch.float32, device=device)
        gen = model.module.generative(
            z=z, library=torch.log(x.sum(1, keepdim=True)),
            batch_index=torch.zeros(len(x), 1, dtype=torch.long, device=device),
        )
        nll = float(-gen["px"].log_prob(x).sum(-1).mean())
    result = {
        "side": "scvi-tools",
        "version": scvi.__version__,
        "epoch_seconds": timer.times,
        "total_seconds": total,
        "heldout_nll": nll,
        "epochs": args.epochs,
        "threads": threads,
        "device": str(device),
        "precision": args.precision,
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "epoch_seconds"}))


if __name__ == "__main__":
    main()
