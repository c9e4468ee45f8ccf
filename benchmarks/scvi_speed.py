"""Acceptance 3: wall time per epoch and held-out NLL, cellsmith ConditionalSCVI vs scvi-tools.

pbmc_sorted_zheng2017, 2,000 HVGs (cellsmith.data.cross_dataset_hvg), seeded 90/10 split into
training and held-out cells. Both models: latent 10, one hidden layer of 128, dropout 0.1, ZINB,
batch size 128, the same epochs and KL warm-up, 90% of the training cells fitted (10% for
validation), the same number of torch threads. Held-out NLL: -log p(x | posterior-mean z,
observed library) summed over genes, averaged over held-out cells. The peer runs in its own
venv (scvi-tools is not a runtime dependency; see benchmarks/scvi_speed_peer.py):

    .venv/bin/python benchmarks/scvi_speed.py --peer-python /tmp/venv-scvi/bin/python \
        --epochs 50 --threads 1 --out /tmp/scvi_speed

Both sides run on ``--accelerator`` (auto: a GPU when one is visible, else the CPU) at
``--precision`` (32, bf16-mixed, or 16-mixed on a GPU). Writes results.json under --out and
prints a markdown table naming the device each side ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from cellsmith.data import cross_dataset_hvg
from cellsmith.datasets import dataset_path, load
from cellsmith.scvi import ConditionalSCVI, SCVIConfig

from scvi_speed_peer import EpochTimer  # the same timer on both sides (benchmarks/ is on sys.path)

PEER = Path(__file__).with_name("scvi_speed_peer.py")


def prepare(out_dir: Path, seed: int) -> Path:
    """2,000 HVGs of pbmc_sorted and a seeded train/test split, written for both sides."""
    adata = load("pbmc_sorted")
    genes = cross_dataset_hvg({"pbmc_sorted": adata}, n_top=2000).genespace
    adata = genes.align(adata, missing="error")
    order = np.random.default_rng(seed).permutation(adata.n_obs)
    split = np.full(adata.n_obs, "train", dtype=object)
    split[order[: adata.n_obs // 10]] = "test"
    adata.obs["split"] = split
    adata.uns = {}
    path = out_dir / "pbmc_sorted_hvg2000.h5ad"
    adata.write_h5ad(path)
    return path


def device_name(device: torch.device) -> str:
    """``cpu`` or the GPU's name (e.g. ``cuda: NVIDIA H100 80GB HBM3``)."""
    return f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def run_cellsmith(
    path: Path, *, epochs: int, kl_warmup: int, threads: int, seed: int, accelerator: str, precision: str
) -> dict:
    import anndata as ad

    adata = ad.read_h5ad(path)
    train, test = adata[adata.obs["split"] == "train"].copy(), adata[adata.obs["split"] == "test"].copy()
    config = SCVIConfig(
        likelihood="zinb", max_epochs=epochs, kl_warmup_epochs=kl_warmup, patience=0, encode_covariates=False,
        num_threads=threads, seed=seed, accelerator=accelerator, precision=precision, progress_bar=False,
    )
    timer = EpochTimer()
    start = time.perf_counter()
    model = ConditionalSCVI(config).train(train, batch_key=None, callbacks=[timer])
    total = time.perf_counter() - start
    nll = float(-model.log_likelihood(test).mean())
    return {
        "side": "cellsmith", "epoch_seconds": timer.times, "total_seconds": total, "heldout_nll": nll,
        "device": device_name(model.device), "precision": precision,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default="/tmp/venv-scvi/bin/python", help="Python with scvi-tools.")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--kl-warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of cellsmith (its default: 1).")
    parser.add_argument(
        "--peer-threads", type=int, default=None,
        help="torch threads of scvi-tools (default: --threads; 0: its own default).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--accelerator", default="auto", help="auto (a GPU when one is visible), cpu or gpu; both sides."
    )
    parser.add_argument("--precision", default="32", help="32, bf16-mixed or 16-mixed (GPU); both sides.")
    parser.add_argument("--skip-peer", action="store_true", help="Only time cellsmith.")
    parser.add_argument("--out", type=Path, default=Path("/tmp/scvi_speed"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dataset_path("pbmc_sorted")
    path = prepare(args.out, args.seed)
    options = dict(epochs=args.epochs, kl_warmup=args.kl_warmup, threads=args.threads, seed=args.seed)
    hardware = dict(accelerator=args.accelerator, precision=args.precision)
    results = [run_cellsmith(path, **options, **hardware)]
    if not args.skip_peer:
        peer_json = args.out / "peer.json"
        peer_options = {**options, "threads": args.threads if args.peer_threads is None else args.peer_threads}
        subprocess.run(
            [args.peer_python, str(PEER), str(path), str(peer_json)]
            + [f"--{k.replace('_', '-')}={v}" for k, v in {**peer_options, **hardware}.items()],
            check=True,
        )
        results.append(json.loads(peer_json.read_text()))
    load_average = os.getloadavg()
    for r in results:
        times = np.asarray(r["epoch_seconds"][1:])  # the first epoch includes start-up
        r["median_epoch_seconds"] = float(np.median(times))
    summary = {
        "options": options,
        **hardware,
        "peer_threads": args.peer_threads,
        "load_average": load_average,
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    print(
        f"| side | device | precision | median s/epoch | total s | held-out NLL |  (load average {load_average[0]:.2f})"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['side']} | {r.get('device', '?')} | {r.get('precision', '?')} | {r['median_epoch_seconds']:.3f} "
            f"| {r['total_seconds']:.1f} | {r['heldout_nll']:.2f} |"
        )
    if len(results) == 2:
        ours, peer = results
        print(
            f"speed-up {peer['median_epoch_seconds'] / ours['median_epoch_seconds']:.1f}x; "
            f"NLL difference {100 * (ours['heldout_nll'] - peer['heldout_nll']) / peer['heldout_nll']:+.2f}%"
        )


if __name__ == "__main__":
    main()
