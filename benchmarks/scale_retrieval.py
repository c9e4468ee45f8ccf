"""Issue 10, acceptance 2 and 4 for retrieval: ``cellsmith retrieve run`` on large screens.

Runs the CLI as a user would, one process per screen and mode (in memory, ``--backed``), each
under ``/usr/bin/time -v``, and prints a markdown table: command, date, machine, load average
at start, wall time and peak RSS (maximum resident set size of the process), with the CSR size
of the screen for scale, then the mean exact_hit@1 / MRR (mask on) of every run so that the
runs can be checked to have retrieved something.

Default: ``--embedders pca,logreg,head:pca --query cell,pseudobulk:50 --seeds 42`` (the issue's
command; libraries mean, bootstrap, raw_cell; mask on, plus mask off for the leakage gap).
Make the smaller screens with ``benchmarks/make_scale_data.py screen --cells N``. Run it alone
on the machine (``flock /tmp/cellsmith-bench.lock``): timings of shared cores are noisy.

    flock /tmp/cellsmith-bench.lock .venv/bin/python benchmarks/scale_retrieval.py \\
        /tmp/screen_30000.h5ad /tmp/screen_100000.h5ad /work/bench-data/screen_300000.h5ad --modes memory,backed
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

import pandas as pd

from _common import describe_h5ad, machine, time_command, today
from retrieval_benchmark import markdown


def run_one(data: Path, backed: bool, args: argparse.Namespace, out: Path) -> dict:
    """One ``retrieve run`` process under ``/usr/bin/time -v``: wall time, peak RSS, metrics."""
    command = [sys.executable, "-m", "cellsmith.cli", "retrieve", "run", "--data", str(data),
               "--embedders", args.embedders, "--query", args.query, "--seeds", args.seeds, "--out", str(out)]
    command += ["--backed"] if backed else []
    shown = "cellsmith " + " ".join(shlex.quote(c) for c in command[3:])
    started_at, load = today(), ", ".join(f"{v:.2f}" for v in os.getloadavg())
    done, wall, peak_gb = time_command(command)
    row = {"screen": describe_h5ad(data), "mode": "backed" if backed else "in memory", "wall s": round(wall),
           "peak RSS GB": round(peak_gb, 2),
           "exit": done.returncode, "date": started_at, "load at start": load, "command": f"`{shown}`"}
    if done.returncode == 0:
        metrics = pd.read_csv(out / "metrics.csv")
        on = metrics[metrics["mask"] == "on"].groupby(["embedder", "query"], sort=False)[["exact_hit@1", "mrr"]].mean()
        row["metrics"] = on
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "data", nargs="+", type=Path, help="screens (.h5ad, raw counts, obs target_gene), smallest first"
    )
    parser.add_argument("--modes", default="memory,backed", help="comma list of memory, backed (default both)")
    parser.add_argument("--embedders", default="pca,logreg,head:pca")
    parser.add_argument("--query", default="cell,pseudobulk:50")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--out", type=Path, help="keep the runs' output folders here (default: a temporary folder)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    print(f"Machine: {machine()}\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for data in args.data:
            for mode in modes:
                rows.append(run_one(data, mode == "backed", args, root / f"{data.stem}-{mode}"))
                shown = {k: v for k, v in rows[-1].items() if k != "metrics"}
                print(" | ".join(map(str, shown.values())), flush=True)
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "metrics"} for r in rows])
    print("\n" + markdown(table, index=False))
    for row in rows:
        if "metrics" in row:
            print(f"\nmask on, mean over libraries — {row['screen']}, {row['mode']}:\n")
            print(markdown(row["metrics"]))


if __name__ == "__main__":
    main()
