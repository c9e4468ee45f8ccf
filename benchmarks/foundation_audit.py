"""Audit of a 100,000 x 20,000 sparse matrix with 1,000 non-zeros per cell: seconds, no densifying.

Run: .venv/bin/python benchmarks/foundation_audit.py [--write]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp

from cellsmith.data import audit_matrix

from _common import machine, today, write_section

N_CELLS, N_GENES, PER_CELL = 100_000, 20_000, 1_000


def build() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    nnz = N_CELLS * PER_CELL
    # 1,000 distinct genes per cell: a random offset plus a fixed stride pattern keeps it cheap.
    offsets = rng.integers(0, N_GENES, N_CELLS, dtype=np.int32)
    pattern = np.arange(PER_CELL, dtype=np.int32) * (N_GENES // PER_CELL)
    indices = ((offsets[:, None] + pattern[None, :]) % N_GENES).astype(np.int32).ravel()
    data = rng.geometric(0.3, nnz).astype(np.float32)
    indptr = np.arange(0, nnz + 1, PER_CELL, dtype=np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(N_CELLS, N_GENES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    x = build()
    matrix_gb = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**30
    tracemalloc.start()  # NumPy reports its buffers to tracemalloc: the audit's own peak
    start = time.perf_counter()
    found = audit_matrix(x)
    seconds = time.perf_counter() - start
    extra_gb = tracemalloc.get_traced_memory()[1] / 2**30
    tracemalloc.stop()
    dense_gb = N_CELLS * N_GENES * 4 / 2**30
    result = (
        f"Command: `.venv/bin/python benchmarks/foundation_audit.py --write` ({today()}; {machine()})\n\n"
        f"| matrix | non-zeros | verdict | audit time | audit's peak allocation | dense size would be |\n"
        f"|---|---|---|---|---|---|\n"
        f"| {N_CELLS:,} x {N_GENES:,} CSR float32 ({matrix_gb:.2f} GiB) | {x.nnz:,} | {found.scale} | "
        f"{seconds:.2f} s | {extra_gb:.2f} GiB | {dense_gb:.1f} GiB |\n"
    )
    print(result)
    if args.write:
        write_section("foundation-audit", result)


if __name__ == "__main__":
    main()
