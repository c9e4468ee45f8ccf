"""scVI at scale (issue 10, acceptance 1 and 4): `cellsmith scvi train --max-steps N`, in memory and
--backed, at several sizes, beside scvi-tools on the same file; wall time, training cells/s, peak RSS.

Every run is its own process under ``/usr/bin/time -v`` (peak RSS = "Maximum resident set
size"), one after the other; run the whole script under ``flock /tmp/cellsmith-bench.lock`` on a
shared machine. Training cells/s = steps x batch size / seconds of training (cellsmith: its
"trained N steps in S s" log line; scvi-tools: the seconds of ``model.train``, from
benchmarks/scvi_scale_peer.py in the peer venv). Both sides: no batch key, ZINB, latent 10,
one hidden layer of 128, batch 128, CPU, torch's default threads. Prints a markdown table.

    flock /tmp/cellsmith-bench.lock .venv/bin/python benchmarks/scale_scvi.py \\
        --sizes 100000 200000 1000000 --peer-sizes 1000000 --out /tmp/scale_scvi.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH_SIZE = 128


def timed(command: list[str], env: dict[str, str]) -> dict:
    """Run ``command`` under /usr/bin/time -v: wall seconds, peak RSS (GB), its output and status."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return {
        "wall_s": wall,
        "peak_rss_gb": int(rss.group(1)) / 1024**2 if rss else float("nan"),
        "stdout": result.stdout,
        "stderr": result.stderr,
        "returncode": result.returncode,
    }


def cellsmith_run(data: Path, mode: str, max_steps: int, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="scale_scvi_") as out:
        command = [
            sys.executable, "-m", "cellsmith.cli", "scvi", "train", "--data", str(data), "--no-batch",
            "--max-steps", str(max_steps), "--accelerator", "cpu", "--out", out,
        ] + (["--backed"] if mode == "backed" else [])
        run = timed(command, env)
    text = " ".join(run["stderr"].split())  # the log line may be wrapped
    trained = re.search(r"trained (\d+) steps in ([\d.]+) s", text)
    run["steps"], run["train_s"] = (int(trained.group(1)), float(trained.group(2))) if trained else (0, float("nan"))
    run["command"] = "cellsmith " + " ".join(command[3:])
    return run


def peer_run(data: Path, python: str, max_steps: int, env: dict[str, str]) -> dict:
    script = Path(__file__).with_name("scvi_scale_peer.py")
    command = [python, str(script), str(data), "--max-steps", str(max_steps), "--batch-size", str(BATCH_SIZE)]
    run = timed(command, {k: v for k, v in env.items() if k != "PYTHONPATH"})
    lines = [line for line in run["stdout"].splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    run["steps"], run["train_s"] = result.get("steps", 0), result.get("train_seconds", float("nan"))
    run["command"] = f"scvi-tools {result.get('version', '?')}: " + " ".join(command[1:])
    return run


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path, default=Path("/work/bench-data"),
        help="Holds atlas_<N>.h5ad (benchmarks/make_scale_data.py).",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100_000, 200_000, 1_000_000],
        help="Cells of the atlas files to train on.",
    )
    parser.add_argument(
        "--modes", nargs="+", default=["memory", "backed"], choices=["memory", "backed"],
        help="cellsmith runs at every size.",
    )
    parser.add_argument(
        "--peer-sizes", type=int, nargs="*", default=[1_000_000],
        help="Sizes also trained with scvi-tools (right after cellsmith in memory).",
    )
    parser.add_argument(
        "--peer-python",
        default="/tmp/venv-scvi/bin/python",
        help="Python of the scvi-tools venv (benchmarks/make_peer_venv.sh).",
    )
    parser.add_argument("--max-steps", type=int, default=300, help="Training steps of every run.")
    parser.add_argument("--out", type=Path, help="Also write the markdown table here.")
    args = parser.parse_args()

    env = dict(os.environ)
    rows = []
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} GiB; "
        f"--max-steps {args.max_steps}, batch {BATCH_SIZE}"
    )
    for size in args.sizes:
        data = args.data_dir / f"atlas_{size}.h5ad"
        runs = [
            (f"cellsmith {mode}", lambda mode=mode, data=data: cellsmith_run(data, mode, args.max_steps, env))
            for mode in args.modes
        ]
        if size in args.peer_sizes:
            runs.insert(1, ("scvi-tools", lambda data=data: peer_run(data, args.peer_python, args.max_steps, env)))
        for name, run in runs:
            before, started = load(), time.strftime("%H:%M:%S", time.gmtime())
            result = run()
            if result["returncode"] != 0:
                print(result["stderr"][-3000:], file=sys.stderr)
            cells_per_s = (
                result["steps"] * BATCH_SIZE / result["train_s"]
                if result["train_s"] == result["train_s"]
                else float("nan")
            )
            status = "ok" if result["returncode"] == 0 else f"exit {result['returncode']}"
            rows.append(
                f"| {size:,} | {name} | {result['wall_s']:.1f} | {result['train_s']:.1f} | {cells_per_s:,.0f} | "
                f"{result['peak_rss_gb']:.2f} | {started} | {before} | {status} | `{result['command']}` |"
            )
            print(rows[-1], flush=True)
    table = "\n".join(
        [
            header,
            "",
            "| cells | run | wall s (process) | training s | training cells/s | peak RSS GB | start (UTC) | "
            "load before | status | command |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
