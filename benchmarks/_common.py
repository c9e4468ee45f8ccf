"""Helpers shared by benchmark scripts: machine description and BENCHMARKS.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import resource
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def machine() -> str:
    """One line: CPU count, memory, Python and torch versions, load average."""
    import torch

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU cores, {mem_gb:.0f} GiB RAM, {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}; load average {load}"
    )


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_section(key: str, markdown: str) -> None:
    """Replace the block between ``<!-- key:start -->`` and ``<!-- key:end -->`` in
    BENCHMARKS.md (appending it at the end when absent)."""
    text = BENCHMARKS_MD.read_text()
    block = f"<!-- {key}:start -->\n{markdown.strip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)


def csr_bytes(path) -> tuple[tuple[int, int], int, int]:
    """``(shape, non-zeros, bytes of data + indices + indptr)`` of an h5ad's CSR X (header only)."""
    import h5py

    with h5py.File(path, "r") as f:
        x = f["X"]
        n_rows, n_cols = (int(v) for v in x.attrs["shape"])
        nnz = x["data"].shape[0]
        size = (
            nnz * (x["data"].dtype.itemsize + x["indices"].dtype.itemsize) + (n_rows + 1) * x["indptr"].dtype.itemsize
        )
    return (n_rows, n_cols), nnz, size


def describe_h5ad(path) -> str:
    """``cells x genes, non-zeros, CSR GiB`` of an h5ad's X, read from its header only."""
    (n_rows, n_cols), nnz, size = csr_bytes(path)
    return f"{n_rows:,} x {n_cols:,}, {nnz / (n_rows * n_cols):.1%} non-zero, CSR {size / 2**30:.2f} GiB"


def time_command(command: list[str]):
    """Run ``command`` under ``/usr/bin/time -v``: ``(completed process, wall s, peak RSS GB)``;
    the tail of its output goes to stderr when it fails."""
    import re
    import subprocess
    import sys
    import time

    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return done, wall, int(peak.group(1)) * 1024 / 1e9 if peak else float("nan")
