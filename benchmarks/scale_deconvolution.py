"""Issue 10, acceptance 3 and 4 for deconvolution: pseudo-bulk and training on large references.

For every reference given (smallest first), one process per step, each under
``/usr/bin/time -v`` (wall time and peak RSS: the maximum resident set size of the process,
reading the file included):

- ``pseudobulk``: ``pseudobulk(reference, 10,000, cells_per_sample=500, seed=0)`` on the
  reference read into memory (``read_h5ad``); the table gives the reference's CSR size in memory
  (data + indices + indptr bytes) and the ratio of the peak RSS to it (acceptance: at most 2);
- ``pseudobulk-backed``: the same from the file opened backed (read by blocks of cells);
- ``train`` / ``train-backed``: ``cellsmith deconvolve train --reference FILE --cell-type-key
  cell_type --max-epochs E [--backed]`` as a user runs it (default config otherwise).

Then a markdown table: command, date, machine, load average at start, wall time, peak RSS.
Make the smaller references with ``benchmarks/make_scale_data.py atlas --genes 20000 --density
0.05 --cells N``, or cut the first N cells of a large one with the ``slice`` subcommand (block by
block; past its end cells repeat from the first, which makes a larger reference of the same
cells). Run alone on the machine: timings of shared cores are noisy.

    flock /tmp/cellsmith-bench.lock .venv/bin/python benchmarks/scale_deconvolution.py run \\
        /tmp/reference_50000.h5ad /tmp/reference_150000.h5ad /work/bench-data/reference_500000.h5ad \\
        --steps pseudobulk,train,train-backed --max-epochs 5
    .venv/bin/python benchmarks/scale_deconvolution.py slice /work/bench-data/reference_500000.h5ad \\
        --cells 50000 --out /tmp/reference_50000.h5ad
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from _common import csr_bytes, machine, time_command, today

STEPS = ("pseudobulk", "pseudobulk-backed", "train", "train-backed")


def slice_reference(path: Path, n_cells: int, out: Path, block: int = 50_000) -> None:
    """Write the first ``n_cells`` cells of ``path`` to ``out``, block by block (anndata's writer);
    past the last cell, cells are repeated from the first (cell ``i`` is cell ``i mod N``)."""
    from anndata.io import sparse_dataset, write_elem

    source = ad.read_h5ad(path, backed="r")
    n_source = source.n_obs
    with h5py.File(out, "w") as f:
        done = 0
        while done < n_cells:
            first = done % n_source
            rows = source.X[first : min(first + block, n_source, first + n_cells - done)]
            if done == 0:
                write_elem(f, "X", rows)
            else:
                sparse_dataset(f["X"]).append(rows)
            done += rows.shape[0]
        obs = source.obs.iloc[np.arange(n_cells) % n_source].copy()
        obs.index = pd.Index([f"cell{i}" for i in range(n_cells)], dtype=str)
        write_elem(f, "obs", obs)
        write_elem(f, "var", source.var.copy())


def pseudobulk_child(path: Path, backed: bool, n_samples: int, cells_per_sample: int) -> None:
    """In this process: read the reference and simulate; print the timings as JSON."""
    from cellsmith.data.pseudobulk import pseudobulk
    from cellsmith.data.rows import read_backed

    start = time.perf_counter()
    reference = read_backed(path) if backed else ad.read_h5ad(path)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    bulk = pseudobulk(reference, n_samples, cells_per_sample=cells_per_sample, seed=0)
    print(json.dumps({"read_s": round(read_s, 1), "simulate_s": round(time.perf_counter() - start, 1),
                      "shape": list(bulk.shape)}))


def run_step(path: Path, step: str, args: argparse.Namespace, out: Path) -> dict:
    """One process under ``/usr/bin/time -v``: wall time, peak RSS and what it printed."""
    if step.startswith("pseudobulk"):
        command = [sys.executable, __file__, "pseudobulk", str(path), "--samples", str(args.samples),
                   "--cells-per-sample", str(args.cells_per_sample)]
        shown = f"benchmarks/scale_deconvolution.py {' '.join(shlex.quote(c) for c in command[2:])}"
    else:
        command = [sys.executable, "-m", "cellsmith.cli", "deconvolve", "train", "--reference", str(path),
                   "--cell-type-key", "cell_type", "--out", str(out), "--no-progress"]
        command += ["--max-epochs", str(args.max_epochs)] if args.max_epochs else []
        shown = "cellsmith " + " ".join(shlex.quote(c) for c in command[3:])
    command += ["--backed"] if step.endswith("backed") else []
    shown += " --backed" if step.endswith("backed") else ""
    started_at, load = today(), ", ".join(f"{v:.2f}" for v in os.getloadavg())
    done, wall, peak_gb = time_command(command)
    shape, nnz, size = csr_bytes(path)
    row = {
        "reference": f"{shape[0]:,} x {shape[1]:,} ({nnz / (shape[0] * shape[1]):.1%} non-zero)",
        "CSR GB": round(size / 1e9, 2), "step": step, "wall s": round(wall, 1),
        "peak RSS GB": round(peak_gb, 2), "RSS / CSR": round(peak_gb / (size / 1e9), 2), "exit": done.returncode,
        "date": started_at, "load at start": load,
    }
    if done.returncode == 0 and step.startswith("pseudobulk"):
        row["detail"] = done.stdout.strip().splitlines()[-1]
    elif done.returncode == 0:
        row["detail"] = " / ".join(line.strip() for line in done.stdout.splitlines() if line.strip())
    row["command"] = f"`{shown}`"
    return row


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="measure the steps on every reference and print the table")
    run.add_argument("references", nargs="+", type=Path, help=".h5ad references (CSR raw counts, obs cell_type)")
    run.add_argument("--steps", default=",".join(STEPS), help=f"comma list of {', '.join(STEPS)} (default all)")
    run.add_argument(
        "--max-epochs", type=int, default=None, help="passed to deconvolve train (default: the config's 80)"
    )
    run.add_argument("--samples", type=int, default=10_000, help="pseudo-bulk samples (default 10,000)")
    run.add_argument("--cells-per-sample", type=int, default=500, help="cells per pseudo-bulk (default 500)")
    child = commands.add_parser("pseudobulk", help="one pseudo-bulk simulation in this process (used by run)")
    child.add_argument("reference", type=Path)
    child.add_argument("--backed", action="store_true")
    child.add_argument("--samples", type=int, default=10_000)
    child.add_argument("--cells-per-sample", type=int, default=500)
    cut = commands.add_parser("slice", help="write the first N cells of a reference (repeated past its end)")
    cut.add_argument("reference", type=Path)
    cut.add_argument("--cells", type=int, required=True)
    cut.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pseudobulk":
        pseudobulk_child(args.reference, args.backed, args.samples, args.cells_per_sample)
        return
    if args.command == "slice":
        slice_reference(args.reference, args.cells, args.out)
        return
    steps = [s.strip() for s in args.steps.split(",")]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    print(f"Machine: {machine()}\n", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.references:
            for step in steps:
                rows.append(run_step(path, step, args, Path(tmp) / f"{path.stem}-{step}"))
                print(" | ".join(map(str, rows[-1].values())), flush=True)
    print("\n" + markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
