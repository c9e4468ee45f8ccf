"""Pseudo-bulk samples from a labelled single-cell reference, with exact proportions as truth.

A pseudo-bulk sample sums the raw counts of ``cells_per_sample`` reference cells drawn by
cell-type proportions; mixing happens on raw counts (mixtures are linear only there), and CPM
is taken after summing. Sampling is vectorised: the draws of all samples become one sparse
samples x cells membership matrix (:func:`membership_matrix`), and blocks of it multiply the
count matrix. Memory grows with samples x genes (the output) plus one block of samples x cells,
never with samples x cells x genes.

:func:`mix_counts` is the one implementation of sampling and summing; :func:`pseudobulk` calls
it (CPM output for training, count output for :func:`cellsmith.data.simulate.bulk`). Training
and validation cells are split by :func:`cellsmith.data.splits.split_indices`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellsmith._logging import logger
from cellsmith.data import normalize
from cellsmith.data.audit import require_counts
from cellsmith.data.splits import split_indices
from cellsmith.errors import CellsmithDeprecationWarning, InputError

#: Samples per block of the membership x counts product (bounds the dense block's memory).
_BLOCK_SAMPLES = 1024
#: Below this many cells a cell type is too rare to draw representative mixtures.
MIN_CELLS_WARN = 10
MIN_CELLS_ERROR = 2


@dataclass
class Mixtures:
    """Summed counts of drawn cells and the exact fraction of cells drawn per type.

    Attributes
    ----------
    counts
        ``(n_samples, n_genes)`` float32 summed raw counts.
    proportions
        ``(n_samples, n_types)`` fraction of the sample's cells drawn from each type.
    cell_types
        Column names of ``proportions``.
    """

    counts: np.ndarray
    proportions: np.ndarray
    cell_types: list[str]


def cell_type_labels(
    reference: ad.AnnData, cell_type_key: str, *, what: str = "the reference"
) -> np.ndarray:
    """The cell-type column as strings, or an InputError naming the columns that exist."""
    if cell_type_key not in reference.obs:
        raise InputError(
            f"{what} has no obs column '{cell_type_key}' (columns: "
            f"{list(reference.obs.columns)}); pass the column that holds cell-type labels."
        )
    labels = reference.obs[cell_type_key]
    if labels.isna().any():
        raise InputError(
            f"obs column '{cell_type_key}' of {what} has {int(labels.isna().sum())} missing "
            "labels; drop those cells or label them."
        )
    return labels.astype(str).to_numpy()


def check_type_sizes(labels: np.ndarray, *, what: str = "the reference") -> list[str]:
    """Sorted cell types; warn for types under 10 cells and refuse types under 2.

    Raises
    ------
    InputError
        When a type has fewer than 2 cells (it cannot be split into train and validation).
    """
    types, sizes = np.unique(labels, return_counts=True)
    too_few = {str(t): int(n) for t, n in zip(types, sizes) if n < MIN_CELLS_ERROR}
    if too_few:
        raise InputError(
            f"cell types of {what} with fewer than {MIN_CELLS_ERROR} cells: {too_few}; each type "
            "needs cells for both training and validation. Merge or drop these types."
        )
    rare = {str(t): int(n) for t, n in zip(types, sizes) if n < MIN_CELLS_WARN}
    if rare:
        logger.warning(
            "cell types of %s with fewer than %d cells: %s; their signatures and mixtures rest on "
            "very few cells (merge them or add cells for reliable proportions).",
            what, MIN_CELLS_WARN, rare,
        )
    return [str(t) for t in types]


def stratified_split(
    labels: np.ndarray, fraction: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deprecated (cellsmith 0.1): use :func:`cellsmith.data.splits.split_indices`.

    ``split_indices(labels.size, {"second": fraction}, seed=seed, groups=labels)`` gives the same
    two sides (``"train"`` and ``"second"``) for the same seed.
    """
    warnings.warn(
        "cellsmith.data.pseudobulk.stratified_split is deprecated; use "
        "cellsmith.data.splits.split_indices(len(labels), {'validation': fraction}, seed=seed, groups=labels).",
        CellsmithDeprecationWarning,
        stacklevel=2,
    )
    parts = split_indices(len(labels), {"second": fraction}, seed=seed, groups=np.asarray(labels))
    return parts["train"], parts["second"]


def membership_matrix(groups: Sequence[np.ndarray], n_cells: int) -> sp.csr_matrix:
    """Sparse samples x cells matrix: entry (s, c) counts how often cell c is in sample s."""
    rows = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    cols = np.concatenate(groups) if groups else np.zeros(0, dtype=int)
    return sp.csr_matrix(
        (np.ones(cols.size, dtype=np.float32), (rows, cols)), shape=(len(groups), n_cells)
    )


def draw_proportions(
    n_samples: int, n_types: int, *, alpha: float, sparse_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Dirichlet(alpha) proportions; in a ``sparse_fraction`` share of samples a random subset
    of 1 .. n_types-1 types is absent (set to zero, the rest renormalised)."""
    props = rng.dirichlet(np.full(n_types, alpha), n_samples)
    if n_types > 1 and sparse_fraction > 0:
        sparse = np.flatnonzero(rng.random(n_samples) < sparse_fraction)
        n_absent = rng.integers(1, n_types, sparse.size)
        # Rank random keys per row: the n_absent smallest ranks are removed.
        ranks = np.argsort(np.argsort(rng.random((sparse.size, n_types)), axis=1), axis=1)
        props[sparse] *= ranks >= n_absent[:, None]
        props[sparse] /= props[sparse].sum(axis=1, keepdims=True)
    return props


def _draw_cells(
    cells_of: Sequence[np.ndarray], n_per_type: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per sample, the drawn cell indices (with replacement within each type)."""
    n_samples = n_per_type.shape[0]
    sample_ids, cell_ids = [], []
    for k, cells in enumerate(cells_of):
        sample_ids.append(np.repeat(np.arange(n_samples), n_per_type[:, k]))
        cell_ids.append(cells[rng.integers(0, cells.size, int(n_per_type[:, k].sum()))])
    samples = np.concatenate(sample_ids)
    order = np.argsort(samples, kind="stable")
    return np.split(np.concatenate(cell_ids)[order], np.cumsum(n_per_type.sum(1))[:-1])


def _sum_cells(counts, groups: list[np.ndarray]) -> np.ndarray:
    """``membership @ counts`` in blocks of samples: dense float32 (samples x genes).

    The counts are densified once (cells x genes) so that each block is one BLAS product,
    several times faster than sparse x sparse at 20% membership density.
    """
    dense = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    dense = dense.astype(np.float32, copy=False)
    out = np.empty((len(groups), dense.shape[1]), dtype=np.float32)
    for start in range(0, len(groups), _BLOCK_SAMPLES):
        block = membership_matrix(groups[start : start + _BLOCK_SAMPLES], dense.shape[0])
        out[start : start + _BLOCK_SAMPLES] = block.toarray() @ dense
    return out


def mix_counts(
    counts,
    labels: np.ndarray,
    n_samples: int,
    *,
    cells_per_sample: int = 500,
    alpha: float = 1.0,
    sparse_fraction: float = 0.0,
    cell_types: Sequence[str] | None = None,
    seed: int = 0,
) -> Mixtures:
    """Sum the raw counts of cells drawn by random proportions: the one sampler of cellsmith.

    Parameters
    ----------
    counts
        Cells x genes raw counts (dense or sparse).
    labels
        Cell-type label of every row of ``counts``.
    n_samples, cells_per_sample
        Number of mixtures and of cells summed in each.
    alpha
        Dirichlet concentration of the proportions (1: uniform on the simplex).
    sparse_fraction
        Share of samples in which a random subset of cell types is absent.
    cell_types
        Column order of the proportions (default: sorted labels); every type must have cells.
    seed
        Same seed, same mixtures.
    """
    if n_samples < 1 or cells_per_sample < 1:
        raise InputError(
            f"need at least 1 sample and 1 cell per sample, got {n_samples} and {cells_per_sample}."
        )
    if not 0.0 <= sparse_fraction <= 1.0 or alpha <= 0:
        raise InputError(f"alpha must be > 0 and sparse_fraction in [0, 1]; got {alpha}, {sparse_fraction}.")
    types = list(cell_types) if cell_types is not None else sorted(set(labels))
    cells_of = [np.flatnonzero(labels == t) for t in types]
    empty = [t for t, cells in zip(types, cells_of) if cells.size == 0]
    if empty:
        raise InputError(f"cell types {empty} have no cells to draw from.")
    rng = np.random.default_rng(seed)
    props = draw_proportions(
        n_samples, len(types), alpha=alpha, sparse_fraction=sparse_fraction, rng=rng
    )
    n_per_type = rng.multinomial(cells_per_sample, props)
    groups = _draw_cells(cells_of, n_per_type, rng)
    return Mixtures(
        counts=_sum_cells(counts, groups),
        proportions=n_per_type / cells_per_sample,
        cell_types=types,
    )


def pseudobulk(
    reference: ad.AnnData,
    n_samples: int,
    *,
    cell_type_key: str = "cell_type",
    counts_layer: str | None = None,
    cells: np.ndarray | None = None,
    cell_types: Sequence[str] | None = None,
    cells_per_sample: int = 500,
    alpha: float = 1.0,
    sparse_fraction: float = 0.0,
    scale: Literal["cpm", "counts"] = "cpm",
    seed: int = 0,
) -> ad.AnnData:
    """Pseudo-bulk samples (CPM, or summed counts) from a labelled raw-count reference.

    Parameters
    ----------
    reference
        Cells x genes with raw counts in X (or ``counts_layer``) and labels in ``cell_type_key``.
    n_samples
        Number of pseudo-bulk samples.
    cells
        Indices of the reference cells to draw from (e.g. one side of
        :func:`cellsmith.data.splits.split_indices`); all cells by default.
    cell_types, cells_per_sample, alpha, sparse_fraction, seed
        See :func:`mix_counts`.
    scale
        ``"cpm"``: X is the CPM of the summed counts (what HP-VADE trains on); ``"counts"``: the
        summed raw counts themselves (a bulk as sequenced).

    Returns
    -------
    AnnData
        Samples x genes; ``X`` CPM (float32, rows sum to 1e6) or the float32 summed raw counts;
        ``obsm["proportions"]`` (DataFrame, one column per cell type) the exact fraction of
        cells drawn per type; ``uns["pseudobulk"]["params"]`` the options.
    """
    if scale not in ("cpm", "counts"):
        raise InputError(f"pseudo-bulk scale must be 'cpm' or 'counts', got '{scale}'.")
    labels = cell_type_labels(reference, cell_type_key)
    counts = require_counts(reference, layer=counts_layer)
    if cells is not None:
        counts, labels = counts[cells], labels[cells]
    mixed = mix_counts(
        counts,
        labels,
        n_samples,
        cells_per_sample=cells_per_sample,
        alpha=alpha,
        sparse_fraction=sparse_fraction,
        cell_types=cell_types,
        seed=seed,
    )
    values = mixed.counts
    if scale == "cpm":  # converted block by block in place: no float64 copy of the whole output
        for start in range(0, n_samples, _BLOCK_SAMPLES):
            values[start : start + _BLOCK_SAMPLES] = normalize.cpm(values[start : start + _BLOCK_SAMPLES])
    out = ad.AnnData(
        X=values,
        obs=pd.DataFrame(index=[f"pseudobulk{i}" for i in range(n_samples)]),
        var=pd.DataFrame(index=reference.var_names.copy()),
    )
    out.obsm["proportions"] = pd.DataFrame(
        mixed.proportions, index=out.obs_names, columns=mixed.cell_types
    )
    out.uns["pseudobulk"] = {
        "params": {
            "cell_type_key": cell_type_key,
            "cells_per_sample": cells_per_sample,
            "alpha": alpha,
            "sparse_fraction": sparse_fraction,
            "scale": scale,
            "n_reference_cells": int(labels.size),
            "seed": seed,
        }
    }
    return out
