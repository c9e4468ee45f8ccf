"""Write large synthetic count h5ad files chunk by chunk, never holding the matrix dense.

Two kinds (issue 10):

- ``atlas``: N cells x 2,000 genes, ~10% non-zero, 12 cell types, 8 donors
  (obs ``cell_type``, ``donor_id``);
- ``screen``: N cells x 18,000 genes, ~5% non-zero, 300 targets plus ``non-targeting``
  controls (obs ``target_gene``, ``donor_id``); a target's own gene is knocked down and a
  program of 30 genes per target is shifted, so perturbations are distinguishable.

Rows are written as CSR blocks of ``--chunk`` cells through anndata's own writer
(``anndata.io.write_elem`` for the first block, ``sparse_dataset(...).append`` for the rest),
so the file is an ordinary h5ad and the peak memory is one block.

Usage::

    python benchmarks/make_scale_data.py atlas --cells 1000000 --out benchmarks/out/atlas_1m.h5ad
    python benchmarks/make_scale_data.py screen --cells 300000 --out benchmarks/out/screen_300k.h5ad
    python benchmarks/make_scale_data.py atlas --cells 500000 --genes 20000 --density 0.05 \
        --out benchmarks/out/reference_500k.h5ad
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import sparse_dataset, write_elem

CONTROL = "non-targeting"


@dataclass(frozen=True)
class Design:
    """What every block of one file is drawn from."""

    genes: np.ndarray  # (G,) names
    profiles: np.ndarray  # (K, G) per-group gene probabilities, rows sum to 1
    group_names: np.ndarray  # (K,) names of the groups (cell types or perturbations)
    group_key: str
    density: float  # target share of non-zero entries
    knockdown: np.ndarray | None  # (K,) index of each group's own gene, -1 for none


def _profile_base(n_genes: int, rng: np.random.Generator) -> np.ndarray:
    # Log-normal gene abundances: a few genes take most reads, as in real data.
    return rng.lognormal(0.0, 1.5, n_genes)


def atlas_design(rng: np.random.Generator, n_genes: int = 2000, n_types: int = 12) -> Design:
    base = _profile_base(n_genes, rng)
    profiles = np.empty((n_types, n_genes))
    for k in range(n_types):
        markers = rng.choice(n_genes, 40, replace=False)
        profile = base * rng.lognormal(0.0, 0.3, n_genes)
        profile[markers] *= 8.0
        profiles[k] = profile / profile.sum()
    return Design(
        genes=np.array([f"GENE{i:05d}" for i in range(n_genes)]),
        profiles=profiles,
        group_names=np.array([f"type_{k:02d}" for k in range(n_types)]),
        group_key="cell_type",
        density=0.115,  # ~10% after duplicate draws of abundant genes merge
        knockdown=None,
    )


def screen_design(rng: np.random.Generator, n_genes: int = 18000, n_targets: int = 300) -> Design:
    base = _profile_base(n_genes, rng)
    base /= base.sum()
    # Targets are among the more expressed genes, so their knock-down is visible.
    targets = rng.choice(np.argsort(base)[-3000:], n_targets, replace=False)
    profiles = np.empty((n_targets + 1, n_genes))
    profiles[0] = base
    for k, target in enumerate(targets, start=1):
        profile = base.copy()
        program = rng.choice(n_genes, 30, replace=False)
        profile[program] *= rng.choice([0.25, 4.0], 30)
        profile[target] *= 0.1
        profiles[k] = profile / profile.sum()
    genes = np.array([f"GENE{i:05d}" for i in range(n_genes)])
    return Design(
        genes=genes,
        profiles=profiles,
        group_names=np.concatenate([[CONTROL], genes[targets]]),
        group_key="target_gene",
        density=0.05,
        knockdown=np.concatenate([[-1], targets]),
    )


def draw_block(design: Design, groups: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """Counts of cells of ``groups`` (codes into design.group_names), CSR float32.

    Each cell draws ~density * G distinct genes from its group's profile (inverse-CDF sampling,
    duplicates merged), each with a count 1 + Poisson(mean rising with the gene's abundance).
    """
    n_cells, n_genes = groups.size, design.genes.size
    # Library sizes vary between cells (log-normal, sd 0.4); 1.15: duplicates are merged below.
    depth = rng.lognormal(-0.08, 0.4, n_cells)
    per_cell = rng.poisson(design.density * n_genes * 1.15 * depth)
    rows = np.repeat(np.arange(n_cells), per_cell)
    cdf = np.cumsum(design.profiles, axis=1)
    genes = np.empty(rows.size, dtype=np.int64)
    for code in np.unique(groups):
        at = np.flatnonzero(groups[rows] == code)
        genes[at] = np.minimum(np.searchsorted(cdf[code], rng.random(at.size)), n_genes - 1)
    keys = np.unique(rows * n_genes + genes)
    rows, genes = keys // n_genes, keys % n_genes
    abundance = design.profiles[groups[rows], genes] * n_genes
    values = 1.0 + rng.poisson(np.minimum(abundance, 50.0))
    matrix = sp.csr_matrix((values.astype(np.float32), (rows, genes)), shape=(n_cells, n_genes))
    matrix.sort_indices()
    return matrix


def write(
    kind: str,
    n_cells: int,
    out: Path,
    *,
    n_genes: int | None = None,
    density: float | None = None,
    chunk: int = 50_000,
    seed: int = 0,
) -> dict:
    """Write the file; return its size and timing."""
    rng = np.random.default_rng(seed)
    if kind == "atlas":
        design = atlas_design(rng, n_genes=n_genes or 2000)
    else:
        design = screen_design(rng, n_genes=n_genes or 18000)
    if density is not None:
        design = dataclasses.replace(design, density=density)
    n_groups = design.group_names.size
    if kind == "screen":  # one cell in ten is a control, the rest spread over the targets
        weights = np.full(n_groups, 0.9 / (n_groups - 1))
        weights[0] = 0.1
    else:
        weights = rng.dirichlet(np.full(n_groups, 3.0))
    groups = rng.choice(n_groups, n_cells, p=weights)
    donors = rng.integers(0, 8, n_cells)
    obs = pd.DataFrame(
        {
            design.group_key: pd.Categorical.from_codes(groups, categories=design.group_names),
            "donor_id": pd.Categorical.from_codes(donors, categories=[f"donor{d}" for d in range(8)]),
        },
        index=pd.Index([f"cell{i}" for i in range(n_cells)], dtype=str),
    )
    var = pd.DataFrame(index=pd.Index(design.genes, dtype=str))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    start = time.perf_counter()
    try:
        _write_blocks(tmp, design, obs, var, groups, chunk=chunk, seed=seed)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    nnz = _stored_nnz(tmp)
    tmp.replace(out)  # nothing half-written under the final name
    return {
        "kind": kind,
        "cells": n_cells,
        "genes": int(design.genes.size),
        "nnz": int(nnz),
        "density": nnz / (n_cells * design.genes.size),
        "seconds": time.perf_counter() - start,
        "bytes": out.stat().st_size,
    }


def _stored_nnz(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return int(f["X"]["data"].shape[0])


def _write_blocks(
    path: Path, design: Design, obs: pd.DataFrame, var: pd.DataFrame, groups: np.ndarray, *, chunk: int, seed: int
) -> None:
    n_cells = groups.size
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        for name in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, name, {})
        for first in range(0, n_cells, chunk):
            block = draw_block(design, groups[first : first + chunk], np.random.default_rng([seed, first]))
            if first == 0:
                write_elem(f, "X", block)  # anndata makes sparse datasets resizable
            else:
                sparse_dataset(f["X"]).append(block)
            print(f"  {min(first + chunk, n_cells):,} / {n_cells:,} cells", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["atlas", "screen"])
    parser.add_argument("--cells", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--genes", type=int, help="genes (default: atlas 2,000, screen 18,000)")
    parser.add_argument(
        "--density", type=float, help="share of entries drawn non-zero (default: atlas ~10%%, screen 5%%)"
    )
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = write(
        args.kind, args.cells, args.out, n_genes=args.genes, density=args.density, chunk=args.chunk, seed=args.seed
    )
    print(
        f"{info['kind']}: {info['cells']:,} x {info['genes']:,}, {info['nnz']:,} non-zeros "
        f"({100 * info['density']:.1f}%), {info['bytes'] / 2**30:.2f} GiB in {info['seconds']:.1f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
