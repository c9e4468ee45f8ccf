"""`cellsmith audit --require counts` on real data and its normalize/log1p/scale transforms.

Run: .venv/bin/python benchmarks/foundation_audit_verdicts.py [--write]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import anndata as ad
import scanpy as sc

from _common import machine, today, write_section

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLI = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "cellsmith"


def variants(folder: Path) -> dict[str, Path]:
    reference = ad.read_h5ad(DATA / "pbmc_sorted_zheng2017.h5ad")
    files = {"pbmc_sorted raw counts": DATA / "pbmc_sorted_zheng2017.h5ad"}
    current = reference.copy()
    sc.pp.normalize_total(current, target_sum=1e4)
    files["+ sc.pp.normalize_total(target_sum=1e4)"] = folder / "normalized.h5ad"
    current.write_h5ad(files["+ sc.pp.normalize_total(target_sum=1e4)"])
    sc.pp.log1p(current)
    files["+ sc.pp.log1p"] = folder / "log1p.h5ad"
    current.write_h5ad(files["+ sc.pp.log1p"])
    sc.pp.scale(current)
    files["+ sc.pp.scale"] = folder / "scaled.h5ad"
    current.write_h5ad(files["+ sc.pp.scale"])
    files["GSE127813 whole-blood bulk (TPM)"] = DATA / "GSE127813_whole_blood_bulk.h5ad"
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    rows = ["| input | verdict (`cellsmith audit FILE`) | `--require counts` exit | message |", "|---|---|---|---|"]
    try:
        for name, path in variants(folder).items():
            result = subprocess.run(
                [str(CLI), "audit", str(path), "--require", "counts"], capture_output=True, text=True
            )
            verdict = next(line for line in result.stdout.splitlines() if line.strip().startswith("X:"))
            message = result.stderr.strip().replace("\n", " ").replace("|", "/")
            rows.append(f"| {name} | {verdict.strip()[3:]} | {result.returncode} | {message[:400]} |")
    finally:
        shutil.rmtree(folder)
    table = "\n".join(rows)
    command = "`.venv/bin/python benchmarks/foundation_audit_verdicts.py --write`"
    text = f"Command: {command} ({today()}; {machine()})\n\n{table}\n"
    print(text)
    if args.write:
        write_section("foundation-verdicts", text)


if __name__ == "__main__":
    main()
