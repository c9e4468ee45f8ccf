"""Cross-dataset highly variable genes: one gene space for every phase of a model.

The bug this prevents: pretraining on "the first 2,000 genes in file order" and fine-tuning on
2,000 HVGs of another dataset, so that gene 0 means ACTB in one phase and GAPDH in the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellsmith._logging import logger
from cellsmith.data.audit import require_counts
from cellsmith.data.genespace import GeneSpace
from cellsmith.data.io import require_unique_genes
from cellsmith.data.normalize import expm1, log1p_normalize
from cellsmith.data.rows import CountRows
from cellsmith.errors import GeneSpaceError, InputError
from cellsmith.report.io import write_atomic

INFO_FILE = "cross_dataset_hvg_info.json"


@dataclass
class HVGSelection:
    """The result of :func:`cross_dataset_hvg`.

    Attributes
    ----------
    genespace
        The selected genes, in the order of the first dataset.
    index_maps
        Per dataset, an array over its source genes: the HVG index, or -1 when not selected.
    priority_genes_included, priority_genes_missing
        Priority genes that are in the space, and those that did not survive the filters.
    datasets
        Per dataset: ``n_cells``, ``n_genes`` and ``n_mapped`` (its genes in the space).
    params
        The arguments of the selection.
    """

    genespace: GeneSpace
    index_maps: dict[str, np.ndarray]
    priority_genes_included: list[str]
    priority_genes_missing: list[str]
    datasets: dict[str, dict[str, int]]
    params: dict[str, Any] = field(default_factory=dict)

    def write(self, directory: str | Path) -> Path:
        """Write ``cross_dataset_hvg_info.json`` into ``directory`` and return its path."""
        directory = Path(directory)
        payload: dict[str, Any] = {
            "hvg_names": list(self.genespace.names),
            "n_hvgs": len(self.genespace),
            "digest": self.genespace.digest,
            "datasets": self.datasets,
        }
        for name, index_map in self.index_maps.items():
            payload[f"{name}_to_hvg"] = index_map.tolist()
        payload["priority_genes_included"] = self.priority_genes_included
        payload["priority_genes_missing"] = self.priority_genes_missing
        payload["params"] = self.params
        return write_atomic(directory / INFO_FILE, lambda tmp: tmp.write_text(json.dumps(payload)))

    @classmethod
    def read(cls, directory: str | Path) -> HVGSelection:
        """Read a selection written by :meth:`write` (``directory`` or the JSON file itself)."""
        path = Path(directory)
        if path.is_dir():
            path = path / INFO_FILE
        if not path.is_file():
            raise InputError(
                f"{path} does not exist; create the gene space with `cellsmith genes hvg ... "
                "--out DIR` and pass that DIR."
            )
        try:
            payload = json.loads(path.read_text())
            names = list(payload["datasets"])
            return cls(
                genespace=GeneSpace(payload["hvg_names"]),
                index_maps={n: np.asarray(payload[f"{n}_to_hvg"], dtype=np.int64) for n in names},
                priority_genes_included=payload["priority_genes_included"],
                priority_genes_missing=payload["priority_genes_missing"],
                datasets=payload["datasets"],
                params=payload["params"],
            )
        except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
            raise InputError(
                f"{path} is not a gene space written by `cellsmith genes hvg` ({type(err).__name__}: "
                f"{err}); write it again."
            ) from None


def _expressed_fraction(counts) -> np.ndarray:
    if sp.issparse(counts):  # counted on the stored values: no boolean copy of the matrix
        counts = sp.csr_matrix(counts)
        positive = counts.indices[counts.data > 0]
        return np.bincount(positive, minlength=counts.shape[1]) / counts.shape[0]
    return (np.asarray(counts) > 0).mean(axis=0)


_DISPERSION_BLOCK = 20_000
"""Cells per block when summing the moments of the normalized dispersion."""


def _gene_moments(counts) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance (ddof=1) of ``expm1(log1p_normalize(counts))``, by row blocks.

    The values are rounded through float32 log1p and back, as scanpy sees them; sums are float64.
    """
    n_cells, n_genes = counts.shape
    total, squares = np.zeros(n_genes), np.zeros(n_genes)
    for _, block in CountRows(counts).blocks(_DISPERSION_BLOCK):
        values = expm1(log1p_normalize(block)).astype(np.float64)
        total += np.asarray(values.sum(axis=0)).ravel()
        squares += np.asarray(values.multiply(values).sum(axis=0)).ravel()
    mean = total / n_cells
    var = (squares / n_cells - mean**2) * (n_cells / max(n_cells - 1, 1))
    return mean, var


def _normalized_dispersion(counts, var_names: pd.Index, n_bins: int = 20) -> pd.Series:
    """Scanpy's normalized dispersion (``flavor="seurat"``) of log-normalized counts.

    Written out here (and checked equal to scanpy's in tests/test_hvg.py) because
    ``sc.pp.highly_variable_genes`` needs the whole log-normalized matrix and copies it for
    expm1 and the squares: about 4x the counts' CSR size, 8.6 GB for a 300,000 x 18,000 screen.
    The moments are summed over row blocks instead; the rest is per gene: the log dispersion
    (variance / mean) is z-scored within 20 equal-width bins of log1p(mean); a gene alone in
    its bin gets (dispersion / itself), i.e. 1, as in scanpy.
    """
    mean, var = _gene_moments(counts)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    frame = pd.DataFrame({"dispersion": np.log(dispersion), "bin": pd.cut(np.log1p(mean), bins=n_bins)})
    by_bin = frame.groupby("bin", observed=True)["dispersion"].agg(avg="mean", dev="std")
    alone = by_bin["dev"].isna()
    by_bin.loc[alone, "dev"] = by_bin.loc[alone, "avg"]
    by_bin.loc[alone, "avg"] = 0.0
    stats = by_bin.loc[frame["bin"]].to_numpy()
    normalized = (frame["dispersion"].to_numpy() - stats[:, 0]) / stats[:, 1]
    return pd.Series(normalized, index=var_names).fillna(-np.inf)


def cross_dataset_hvg(
    datasets: Mapping[str, ad.AnnData],
    *,
    n_top: int = 2000,
    priority_genes: Iterable[str] = (),
    min_cell_fraction: float = 1e-4,
    counts_layer: str | None = None,
) -> HVGSelection:
    """Select one gene space shared by several datasets.

    1. intersect gene names across datasets;
    2. drop genes expressed in fewer than ``min_cell_fraction`` of cells in any dataset;
    3. include every priority gene that survives 1-2 first;
    4. fill the rest by normalized dispersion (scanpy, on log-normalized counts) averaged across
       datasets weighted by their numbers of cells;
    5. return the GeneSpace and, per dataset, a source-index -> HVG-index map.

    Parameters
    ----------
    datasets
        ``{name: AnnData of raw counts}``; names must be identifiers usable in file keys.
    n_top
        Size of the gene space (fewer when fewer genes survive the filters).
    priority_genes
        Genes to include first, e.g. every perturbed target gene.
    min_cell_fraction
        Minimum fraction of cells expressing a gene, in every dataset.
    counts_layer
        Layer holding raw counts (X when None), in every dataset.
    """
    if not datasets:
        raise InputError("cross_dataset_hvg needs at least one dataset; got none.")
    if n_top < 1:
        raise InputError(f"n_top must be at least 1, got {n_top}.")
    counts = {name: require_counts(a, layer=counts_layer) for name, a in datasets.items()}
    for name, a in datasets.items():
        require_unique_genes(a.var_names, f"dataset '{name}'")
    first = next(iter(datasets.values()))
    common = first.var_names
    for a in datasets.values():
        common = common[common.isin(a.var_names)]
    if len(common) == 0:
        raise GeneSpaceError(
            f"the datasets {list(datasets)} share no gene names; check that all use gene symbols."
        )
    keep = pd.Series(True, index=common)
    dispersion = pd.Series(0.0, index=common)
    total_cells = sum(a.n_obs for a in datasets.values())
    for name, a in datasets.items():
        cols = a.var_names.get_indexer(common)
        # Gene order already that of the intersection (one dataset, or the same genes): no copy.
        x = counts[name] if np.array_equal(cols, np.arange(a.n_vars)) else counts[name][:, cols]
        keep &= _expressed_fraction(x) >= min_cell_fraction
        dispersion += _normalized_dispersion(x, common) * (a.n_obs / total_cells)
    candidates = common[keep.to_numpy()]
    priority = list(dict.fromkeys(str(g) for g in priority_genes))
    included = [g for g in priority if g in set(candidates)]
    missing_priority = [g for g in priority if g not in set(candidates)]
    if len(included) > n_top:
        raise InputError(
            f"{len(included)} priority genes survive the filters but n_top is {n_top}; raise "
            "n_top or pass fewer priority genes."
        )
    rest = dispersion[candidates].drop(included).sort_values(ascending=False, kind="stable")
    chosen = set(included) | set(rest.index[: n_top - len(included)])
    space = GeneSpace([g for g in first.var_names if g in chosen])
    index_maps = {name: space.index_map(a.var_names) for name, a in datasets.items()}
    summary = {
        name: {"n_cells": a.n_obs, "n_genes": a.n_vars, "n_mapped": int((index_maps[name] >= 0).sum())}
        for name, a in datasets.items()
    }
    logger.info(
        "cross-dataset HVG: %d common genes, %d pass the expression filter, %d selected "
        "(%d priority genes kept, %d missing), digest %s",
        len(common), len(candidates), len(space), len(included), len(missing_priority), space.digest,
    )
    return HVGSelection(
        genespace=space,
        index_maps=index_maps,
        priority_genes_included=included,
        priority_genes_missing=missing_priority,
        datasets=summary,
        params={
            "n_top": n_top,
            "min_cell_fraction": min_cell_fraction,
            "counts_layer": counts_layer,
            "n_common_genes": len(common),
            "n_candidates": len(candidates),
            "priority_genes": priority,
        },
    )
