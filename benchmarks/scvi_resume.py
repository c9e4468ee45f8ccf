"""Acceptance 4: save / load in a fresh process gives identical predictions, and training
interrupted then resumed from its checkpoint ends at the validation loss of an uninterrupted
run with the same seed.

    .venv/bin/python benchmarks/scvi_resume.py --epochs 12 --interrupt-at 5 --out /tmp/scvi_resume
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np

from cellsmith.datasets import simulated_pbmc
from cellsmith.scvi import ConditionalSCVI, SCVIConfig

FRESH = """
import sys, numpy as np, anndata as ad
from cellsmith.scvi import ConditionalSCVI
model = ConditionalSCVI.load(sys.argv[1])
np.save(sys.argv[3], model.predict(ad.read_h5ad(sys.argv[2]), set={"timepoint": "24h"}).X)
"""


class Interrupt(L.Callback):
    """Raise at the start of one epoch, as a killed job would stop there (Lightning turns a
    KeyboardInterrupt into a process exit, so a RuntimeError stands in for it)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated interruption")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--interrupt-at", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/scvi_resume"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cells = simulated_pbmc(n_cells=1500, n_genes=400, seed=args.seed)
    cells.write_h5ad(args.out / "cells.h5ad")
    config = SCVIConfig(max_epochs=args.epochs, kl_warmup_epochs=5, patience=0, seed=args.seed, progress_bar=False)
    train = dict(batch_key="donor_id", covariate_keys=["timepoint"])

    full = ConditionalSCVI(config).train(cells, **train)
    full.save(args.out / "model")
    subprocess.run(
        [
            sys.executable, "-c", FRESH, str(args.out / "model"), str(args.out / "cells.h5ad"),
            str(args.out / "fresh.npy"),
        ],
        check=True,
    )
    fresh, here = np.load(args.out / "fresh.npy"), full.predict(cells, set={"timepoint": "24h"}).X
    print(
        f"fresh-process predict identical: {np.array_equal(fresh, here)} (max |diff| {np.abs(fresh - here).max():.3g})"
    )

    run_dir = args.out / "interrupted"
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        ConditionalSCVI(config).train(cells, **train, out_dir=run_dir, callbacks=[Interrupt(args.interrupt_at)])
    except RuntimeError as err:
        print(f"interrupted: {err}")
    resumed = ConditionalSCVI(config).train(cells, **train, out_dir=run_dir, resume=True)
    a, b = full.history["val_loss"].iloc[-1], resumed.history["val_loss"].iloc[-1]
    print(
        f"final val_loss: uninterrupted {a:.6f}, interrupted at epoch {args.interrupt_at} and resumed {b:.6f}, "
        f"relative difference {abs(a - b) / abs(a):.2e} (load average {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
