"""Pseudo-bulk samples from a labelled single-cell reference, with exact proportions as truth.

A pseudo-bulk sample sums the raw counts of ``cells_per_sample`` reference cells drawn by
cell-type proportions; mixing happens on raw counts (mixtures are linear only there), and CPM
is taken after summing. Sampling is vectorised: the draws of all samples become one sparse
samples x cells membership matrix (:func:`membership_matrix`), and blocks of it multiply the
count matrix, which stays sparse (CSR in memory, or read by blocks of cells from a backed h5ad)
and is never densified whole. Memory grows with samples x genes (the output) plus one bounded
block, never with cells x genes or samples x cells x genes.

:func:`mix_counts` is the one implementation of sampling and summing; :func:`pseudobulk` calls
it (CPM output for training, count output for :func:`cellsmith.data.simulate.bulk`). Training
and validation cells are split by :func:`cellsmith.data.splits.split_indices`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellsmith._logging import logger
from cellsmith.data import normalize
from cellsmith.data.rows import BLOCK_ROWS, CountRows, count_rows
from cellsmith.data.splits import split_indices
from cellsmith.errors import CellsmithDeprecationWarning, InputError

#: Samples per block of the membership x counts product (bounds the dense block's memory).
_BLOCK_SAMPLES = 1024
#: Most values of a densified cell block (128 MB of float32) when dense products are cheaper.
_DENSE_ELEMENTS = 2**25
#: About how many BLAS multiply-adds (dense membership x dense cells) cost one sparse x sparse
#: multiply-add (measured 50 to 300 on 2 cores; between the two, either is fine).
_DENSE_SPEEDUP = 100
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
        When there is a single type, or a type has fewer than 2 cells (it cannot be split into
        train and validation).
    """
    types, sizes = np.unique(labels, return_counts=True)
    if types.size < 2:  # proportions of a single type are 1 for every sample: nothing to learn
        raise InputError(
            f"{what} has {types.size} cell type ({', '.join(map(str, types)) or 'no labels'}); "
            "deconvolution needs at least 2. Check --cell-type-key."
        )
    too_few = {str(t): int(n) for t, n in zip(types, sizes, strict=True) if n < MIN_CELLS_ERROR}
    if too_few:
        raise InputError(
            f"cell types of {what} with fewer than {MIN_CELLS_ERROR} cells: {too_few}; each type "
            "needs cells for both training and validation. Merge or drop these types."
        )
    rare = {str(t): int(n) for t, n in zip(types, sizes, strict=True) if n < MIN_CELLS_WARN}
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


def as_count_rows(counts) -> CountRows:
    """``counts`` as :class:`~cellsmith.data.rows.CountRows` (a dense or sparse matrix becomes an
    in-memory CSR one; CountRows, in memory or backed, are returned as they are)."""
    return counts if isinstance(counts, CountRows) else CountRows(sp.csr_matrix(counts))


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


def _stored_values(counts: CountRows) -> int:
    """Non-zeros of ``counts`` (of its selected columns, estimated pro rata when a subset)."""
    matrix = counts.matrix
    nnz = matrix.group["data"].shape[0] if counts.backed else matrix.nnz
    return int(nnz * counts.shape[1] / max(matrix.shape[1], 1))


def _dense_is_cheaper(members: sp.csr_matrix, counts: CountRows) -> bool:
    """Whether dense products (membership block x densified cell block) beat sparse x sparse.

    Dense costs ``samples x cells x genes`` BLAS multiply-adds, sparse about ``draws x non-zeros
    per cell`` scattered ones: dense wins when samples draw a large share of a small reference.
    """
    n_cells, n_genes = counts.shape
    dense = members.shape[0] * n_cells * n_genes / _DENSE_SPEEDUP
    return dense < members.nnz * _stored_values(counts) / max(n_cells, 1)


def _cell_blocks(counts: CountRows, block_rows: int | None) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Row blocks of ``counts``; ``block_rows=None`` with an in-memory CSR matrix yields the
    matrix itself as one block (no copy)."""
    if block_rows is None and not counts.backed and counts.columns is None:
        yield 0, counts.matrix
        return
    yield from counts.blocks(block_rows or BLOCK_ROWS)


def _sum_cells(counts: CountRows, groups: list[np.ndarray]) -> np.ndarray:
    """``membership @ counts``: dense float32 (samples x genes), the counts never densified whole.

    The reference is read once, by blocks of cells (in memory: one block without a copy when
    sparse products are used); each block meets the membership columns of its cells, in blocks
    of samples. Where a dense BLAS product is cheaper (samples draw a large share of a small
    reference) a cell block of at most ``_DENSE_ELEMENTS`` values is densified; otherwise the
    sparse membership multiplies the sparse block. Counts are integers, so both give the same
    sums, exactly, in any order.
    """
    n_cells, n_genes = counts.shape
    members = membership_matrix(groups, n_cells)
    dense = _dense_is_cheaper(members, counts)
    by_cell = members.tocsc()
    out = np.zeros((len(groups), n_genes), dtype=np.float32)
    for start, block in _cell_blocks(counts, max(1, _DENSE_ELEMENTS // max(n_genes, 1)) if dense else None):
        part = by_cell[:, start : start + block.shape[0]].tocsr()
        values = block.toarray().astype(np.float32, copy=False) if dense else block
        for first in range(0, len(groups), _BLOCK_SAMPLES):
            rows = part[first : first + _BLOCK_SAMPLES]
            if rows.nnz:
                product = rows.toarray() @ values if dense else (rows @ values).toarray()
                out[first : first + _BLOCK_SAMPLES] += product
    return out


def mix_counts(
    counts,
    labels: np.ndarray,
    n_samples: int,
    *,
    cells: np.ndarray | None = None,
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
        Cells x genes raw counts: dense, sparse, or :class:`~cellsmith.data.rows.CountRows`
        (in memory or backed); read by blocks of cells, never densified whole.
    labels
        Cell-type label of every row of ``counts``.
    cells
        Indices of the rows to draw from (all rows by default); the others are never drawn.
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
    rows = as_count_rows(counts)
    cells = np.arange(labels.size) if cells is None else np.asarray(cells)
    labels = labels[cells]
    types = list(cell_types) if cell_types is not None else sorted(set(labels))
    cells_of = [cells[labels == t] for t in types]
    empty = [t for t, cells in zip(types, cells_of, strict=True) if cells.size == 0]
    if empty:
        raise InputError(f"cell types {empty} have no cells to draw from.")
    rng = np.random.default_rng(seed)
    props = draw_proportions(
        n_samples, len(types), alpha=alpha, sparse_fraction=sparse_fraction, rng=rng
    )
    n_per_type = rng.multinomial(cells_per_sample, props)
    groups = _draw_cells(cells_of, n_per_type, rng)
    return Mixtures(
        counts=_sum_cells(rows, groups),
        proportions=n_per_type / cells_per_sample,
        cell_types=types,
    )


def cpm_in_place(values: np.ndarray) -> np.ndarray:
    """CPM of summed counts, converted block by block in place (no float64 copy of the whole)."""
    for start in range(0, len(values), _BLOCK_SAMPLES):
        values[start : start + _BLOCK_SAMPLES] = normalize.cpm(values[start : start + _BLOCK_SAMPLES])
    return values


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
    mixed = mix_counts(
        count_rows(reference, layer=counts_layer),
        labels,
        n_samples,
        cells=cells,
        cells_per_sample=cells_per_sample,
        alpha=alpha,
        sparse_fraction=sparse_fraction,
        cell_types=cell_types,
        seed=seed,
    )
    values = cpm_in_place(mixed.counts) if scale == "cpm" else mixed.counts
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
            "n_reference_cells": int(labels.size if cells is None else len(cells)),
            "seed": seed,
        }
    }
    return out
