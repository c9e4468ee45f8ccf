"""`cellsmith scvi train --devices 2` (DDP, two gloo processes on the CPU) matches one process.

Each process takes half of every global batch (``EpochBatches`` shards by rank), so the averaged
gradient is that of the global batch: the held-out NLL must agree with single-process training
within 1%. Lightning's DDP launcher runs the same command once more for rank 1; only rank 0
writes the model and prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cellsmith
from cellsmith.data import simulate
from cellsmith.scvi import ConditionalSCVI
from cellsmith.scvi import batches as scvi_batches
from cellsmith.scvi.batches import ControlPairing, EpochBatches

CONFIG = (
    "max_epochs: 8\nkl_warmup_epochs: 4\nn_hidden: 32\nn_latent: 4\npatience: 0\nnum_threads: 1\nprogress_bar: false\n"
)


def _train(workdir: Path, devices: int) -> subprocess.CompletedProcess:
    # The processes import the cellsmith this test imports (a source tree or the installed one).
    src = str(Path(cellsmith.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable, "-m", "cellsmith.cli", "scvi", "train", "--data", str(workdir / "train.h5ad"), "--config",
        str(workdir / "cfg.yaml"), "--accelerator", "cpu", "--devices", str(devices), "--seed", "1", "--out",
        str(workdir / f"model{devices}"),
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=workdir)


def test_two_process_ddp_matches_one_process(tmp_path):
    cells = simulate.singlecell(600, 100, cell_types=2, donors=2, seed=0)
    cells[:500].copy().write_h5ad(tmp_path / "train.h5ad")
    held_out = cells[500:].copy()
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    nll = {}
    for devices in (1, 2):
        result = _train(tmp_path, devices)
        assert result.returncode == 0, result.stderr[-3000:]
        # stdout of both processes: the rank-1 process must not report (nor write) anything
        assert result.stdout.count("model written to") == 1, result.stdout
        model = ConditionalSCVI.load(tmp_path / f"model{devices}")
        assert model.config.devices == devices and model.config.seed == 1
        nll[devices] = float(-model.log_likelihood(held_out).mean())
    assert abs(nll[2] - nll[1]) / nll[1] < 0.01, nll


def test_each_process_takes_its_share_of_every_global_batch(monkeypatch):
    pairing = ControlPairing(np.ones(50, bool), np.zeros(50, int), np.arange(50))
    batches = EpochBatches(np.arange(50), pairing, batch_size=16, seed=7)
    batches.set_epoch(2)
    whole = [t.numpy() for t, _ in batches]
    shares = {}
    for rank in (0, 1):
        monkeypatch.setattr(scvi_batches, "process_rank", lambda rank=rank: (rank, 2))
        shares[rank] = [t.numpy() for t, _ in batches]
    assert len(shares[0]) == len(shares[1]) == len(whole) == 4
    for batch, first, second in zip(whole, shares[0], shares[1], strict=True):
        assert np.array_equal(first, batch[0::2]) and np.array_equal(second, batch[1::2])


@pytest.mark.parametrize("world", [2, 3])
def test_shards_partition_a_batch_and_are_never_empty(world):
    rows = np.arange(10, 20)
    parts = [scvi_batches.shard(rows, rank, world) for rank in range(world)]
    assert sorted(np.concatenate(parts)) == list(rows)
    assert all(scvi_batches.shard(np.array([7]), rank, world).tolist() == [7] for rank in range(world))
