"""Issue 10, acceptance 2 and 4 for perturbation: the CLI on VCC-size screens, and backed pretraining.

For every screen (smallest first) it runs, as a user would, one process per step, each under
``/usr/bin/time -v`` (wall time and peak RSS = maximum resident set size of the process):

1. ``cellsmith genes hvg`` on the screen (``--n-top`` genes, the targets first);
2. ``cellsmith perturb finetune`` (random gene embeddings, held-out perturbations);
3. ``cellsmith perturb predict`` of the held-out targets from the held-out controls;
4. ``cellsmith perturb evaluate --baselines`` against the held-out real cells (cell-eval).

Then, for every ``--atlas``, ``cellsmith perturb pretrain --backed`` (gene space from
``cellsmith genes hvg`` on ``--atlas-genes``, a smaller file with the same genes). It prints a
markdown table: screen size (cells x genes, non-zeros, CSR size), step, wall time, peak RSS,
exit status, date and load average when the step started, and the command.

With ``--lock FILE`` every step runs under ``flock FILE`` (one big run at a time on a shared
machine; the wall time is the step's own, not the wait). Make the smaller screens with
``benchmarks/make_scale_data.py screen --cells N``.

    .venv/bin/python benchmarks/scale_perturbation.py /tmp/screen_30000.h5ad /tmp/screen_100000.h5ad \\
        /work/bench-data/screen_300000.h5ad --atlas /work/bench-data/atlas_200000.h5ad \\
        --atlas /work/bench-data/atlas_1000000.h5ad --atlas-genes /work/bench-data/atlas_100000.h5ad \\
        --lock /tmp/cellsmith-bench.lock --out /tmp/scale_perturbation
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from _common import describe_h5ad, machine

CLI = [sys.executable, "-m", "cellsmith.cli"]


def markdown(rows: list[dict]) -> str:
    """Rows of equal keys as a markdown table."""
    lines = [list(rows[0]), ["---"] * len(rows[0]), *[[str(v) for v in row.values()] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _seconds(clock: str) -> float:
    """``h:mm:ss`` or ``m:ss.ss`` of ``/usr/bin/time -v`` in seconds."""
    value = 0.0
    for part in clock.split(":"):
        value = 60 * value + float(part)
    return value


def run_step(data: Path, step: str, args: list[str], lock: Path | None) -> dict:
    """One CLI process under ``/usr/bin/time -v`` (and ``flock``): its row of the table."""
    timed = "cat /proc/loadavg; date -u '+%Y-%m-%d %H:%M UTC'; exec /usr/bin/time -v " + shlex.join([*CLI, *args])
    command = ["sh", "-c", timed] if lock is None else ["flock", str(lock), "sh", "-c", timed]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.splitlines()
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-5000:], file=sys.stderr)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr)
    return {
        "data": describe_h5ad(data), "step": step,
        "wall s": round(_seconds(wall.group(1))) if wall else float("nan"),
        "peak RSS GB": round(int(peak.group(1)) / 1e6, 2) if peak else float("nan"),
        "exit": done.returncode, "date": lines[1] if len(lines) > 1 else "",
        "load at start": " ".join(lines[0].split()[:3]) if lines else "",
        "command": "`cellsmith " + re.sub(r"--targets \S+", "--targets <held-out targets>", shlex.join(args)) + "`",
    }


def screen_steps(screen: Path, out: Path, options: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The four steps on one screen (predict's targets are read from the split when it runs)."""
    hvg, model, pred = out / "hvg", out / "model", out / "pred.h5ad"
    return [
        (
            "genes hvg",
            [
                "genes", "hvg", "--dataset", f"screen={screen}", "--priority-genes-from",
                "screen:target_gene",
                "--n-top", str(options.n_top), "--out", str(hvg),
            ],
        ),
        (
            "perturb finetune",
            [
                "perturb", "finetune", "--data", str(screen), "--genes", str(hvg), "--out", str(model),
                *(["--config", str(options.config)] if options.config else []),
            ],
        ),
        (
            "perturb predict",
            [
                "perturb", "predict", "--model", str(model), "--controls", str(model / "heldout_controls.h5ad"),
                "--targets", "{test_targets}", "--cells-per-target", str(options.cells_per_target), "--out", str(pred),
            ],
        ),
        (
            "perturb evaluate --baselines",
            [
                "perturb", "evaluate", "--pred", str(pred), "--real", str(model / "heldout_real.h5ad"), "--baselines",
                "--out", str(out / "eval"),
            ],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "screens", nargs="*", type=Path, help="screens (.h5ad, raw counts, obs target_gene), smallest first"
    )
    parser.add_argument(
        "--atlas", action="append", type=Path, default=[], help="atlas for `perturb pretrain --backed`; repeat"
    )
    parser.add_argument(
        "--atlas-genes", type=Path, help="file the pretraining gene space is selected on (default: each atlas)"
    )
    parser.add_argument("--pretrain-steps", type=int, default=300, help="--max-steps of pretraining (default 300)")
    parser.add_argument("--n-top", type=int, default=2000, help="genes of the screen's gene space, targets included")
    parser.add_argument("--cells-per-target", type=int, default=100)
    parser.add_argument("--config", type=Path, help="FinetuneConfig YAML for finetune (default: the defaults)")
    parser.add_argument("--lock", type=Path, help="run every step under `flock LOCK`")
    parser.add_argument("--out", type=Path, required=True, help="folder for every step's output")
    options = parser.parse_args()
    print(f"Machine: {machine()}\n")
    rows = []

    def record(data: Path, step: str, args: list[str]) -> bool:
        rows.append(run_step(data, step, args, options.lock))
        print(" | ".join(map(str, rows[-1].values())), flush=True)
        return rows[-1]["exit"] == 0

    for screen in options.screens:
        out = options.out / screen.stem
        for step, args in screen_steps(screen, out, options):
            if "{test_targets}" in args:
                split = json.loads((out / "model" / "split.json").read_text())
                args = [",".join(split["test_targets"]) if a == "{test_targets}" else a for a in args]
            if not record(screen, step, args):
                break
    for atlas in options.atlas:
        out = options.out / atlas.stem
        genes = options.atlas_genes or atlas
        if record(
            genes,
            "genes hvg",
            ["genes", "hvg", "--dataset", f"atlas={genes}", "--n-top", "2000", "--out", str(out / "hvg")],
        ):
            record(
                atlas,
                "perturb pretrain --backed",
                [
                    "perturb", "pretrain", "--data", str(atlas), "--genes", str(out / "hvg"), "--max-steps",
                    str(options.pretrain_steps), "--out", str(out / "pretrain"), "--backed",
                ],
            )
    print("\n" + markdown(rows))


if __name__ == "__main__":
    main()
