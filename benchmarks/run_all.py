"""Run every benchmark claim in turn (``make benchmarks``); each script prints its table and
the ones with ``--write`` update their block of BENCHMARKS.md.

    .venv/bin/python benchmarks/run_all.py [--only PREFIX] [--list]

The scVI peer comparison needs scvi-tools in its own environment (see benchmarks/scvi_speed.py);
it is skipped when /tmp/venv-scvi is absent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER_PYTHON = Path("/tmp/venv-scvi/bin/python")

#: (name, script and arguments), in the order of BENCHMARKS.md.
CLAIMS: list[tuple[str, list[str]]] = [
    ("foundation-audit", ["foundation_audit.py", "--write"]),
    ("foundation-verdicts", ["foundation_audit_verdicts.py", "--write"]),
    (
        "deconvolution-accuracy",
        ["deconvolution_accuracy.py", "--seed", "1", "--save-model", "/tmp/cellsmith_deconv_model"],
    ),
    ("deconvolution-speed", ["deconvolution_speed.py", "--model", "/tmp/cellsmith_deconv_model"]),
    (
        "scvi-speed",
        ["scvi_speed.py", "--epochs", "30", "--kl-warmup", "30", "--threads", "2", "--out", "/tmp/scvi_speed"],
    ),
    ("scvi-kang", ["scvi_kang.py", "--seed", "0", "--out", "/tmp/scvi_kang"]),
    ("scvi-ablation", ["scvi_ablation.py", "--seed", "0", "--out", "/tmp/scvi_ablation"]),
    ("scvi-resume", ["scvi_resume.py", "--epochs", "12", "--interrupt-at", "5", "--out", "/tmp/scvi_resume"]),
    ("perturbation-simulated", ["perturbation_simulated.py", "--seed", "0", "--write"]),
    ("perturbation-papalexi", ["perturbation_papalexi.py", "--seed", "0", "--write"]),
    ("retrieval-speed", ["retrieval_speed.py", "--write"]),
    (
        "retrieval-papalexi",
        [
            "retrieval_benchmark.py", "--dataset", "papalexi", "--embedders",
            "pca,logreg,head:pca:finetune",
            "--libraries",
            "mean,bootstrap,raw_cell",
            "--queries",
            "cell,pseudobulk:50",
            "--seeds",
            "42,43",
            "--write",
        ],
    ),
    (
        "retrieval-simulated",
        [
            "retrieval_benchmark.py", "--dataset", "simulated", "--embedders",
            "pca,logreg,head:pca,head:pca:finetune",
            "--libraries",
            "mean,bootstrap,raw_cell",
            "--queries",
            "cell,pseudobulk:20",
            "--seeds",
            "42,43",
            "--write",
        ],
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the claims whose name starts with this")
    parser.add_argument("--list", action="store_true", help="list the claims and exit")
    args = parser.parse_args()
    failed = []
    for name, command in CLAIMS:
        if not name.startswith(args.only):
            continue
        if args.list:
            print(f"{name}: python benchmarks/{' '.join(command)}")
            continue
        if name == "scvi-speed" and not PEER_PYTHON.exists():
            print(f"== {name}: skipped ({PEER_PYTHON} with scvi-tools is absent)")
            continue
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / command[0]), *command[1:]], cwd=HERE.parent).returncode:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
