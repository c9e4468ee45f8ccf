"""From a labelled raw-count reference to what HP-VADE trains on: genes, signature, cells.

Functions here take arrays (counts, labels) so that the user-facing class keeps the AnnData
contract and the steps stay testable one by one. Counts are a dense or sparse matrix or
:class:`~cellsmith.data.rows.CountRows` (in memory or backed); every statistic is accumulated
over blocks of cells (:func:`group_means`), so a reference is never densified or copied whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellsmith._logging import logger
from cellsmith.data import normalize
from cellsmith.data.pseudobulk import as_count_rows
from cellsmith.data.splits import split_indices
from cellsmith.errors import GeneSpaceError

#: Fewest genes a model can be trained on.
MIN_GENES = 20


def genes_to_train_on(reference_genes: Sequence[str], genes: Sequence[str], what: str) -> np.ndarray:
    """Indices (sorted) of the ``reference_genes`` that are among ``genes`` (e.g. a bulk's).

    Raises
    ------
    GeneSpaceError
        Fewer than :data:`MIN_GENES` in common: usually gene symbols on one side and Ensembl IDs
        on the other, or a bulk table read with samples as genes.
    """
    names = np.asarray(reference_genes, dtype=str)
    wanted = np.asarray(list(genes), dtype=str)
    keep = np.flatnonzero(np.isin(names, wanted))
    if keep.size < MIN_GENES:
        raise GeneSpaceError(
            f"{what} has {keep.size} of the {wanted.size} genes to train on (the bulk's); at least "
            f"{MIN_GENES} are needed. The reference has e.g. {names[:3].tolist()}, the bulk "
            f"{wanted[:3].tolist()}: use the same identifiers on both sides (gene symbols or Ensembl IDs), "
            "read a table whose rows are genes with --orientation genes-by-samples, or give a bulk that "
            "measures more genes."
        )
    return keep


def matching_any(names: Sequence[str], patterns: Sequence[str]) -> np.ndarray:
    """Boolean mask of the ``names`` that any of the regular expressions ``patterns`` finds."""
    regexes = [re.compile(pattern) for pattern in patterns]
    return np.array([any(regex.search(str(n)) for regex in regexes) for n in names], dtype=bool)


@dataclass
class GroupMeans:
    """Means over the cells of each group (e.g. a cell type), accumulated block by block.

    Attributes
    ----------
    cpm, detection
        ``(n_genes, n_groups)`` mean CPM of the cells of each group, and share of them in which
        each gene is detected.
    totals
        ``(n_groups,)`` mean total counts per cell of each group (exact sum / size).
    sizes
        ``(n_groups,)`` cells per group.
    """

    cpm: np.ndarray
    detection: np.ndarray
    totals: np.ndarray
    sizes: np.ndarray


def type_codes(labels: np.ndarray, cell_types: Sequence[str]) -> np.ndarray:
    """``(n_cells,)`` index of each cell's label in ``cell_types`` (-1 for other labels)."""
    return pd.Categorical(np.asarray(labels, dtype=str), categories=list(cell_types)).codes.astype(np.int64)


def group_means(counts, groups: np.ndarray, n_groups: int) -> GroupMeans:
    """Mean CPM, detection and total counts per group, reading the cells block by block.

    Each cell enters its group's mean CPM and detection with weight ``1 / group size``, summed
    in row order: within one block the same arithmetic as ``matrix[rows].mean(axis=0)`` of
    scipy, so thresholds on these means (``min_cell_fraction``) decide as they did on whole
    matrices.

    Parameters
    ----------
    counts
        Cells x genes raw counts (matrix or :class:`~cellsmith.data.rows.CountRows`).
    groups
        ``(n_cells,)`` group of each cell in ``0 .. n_groups-1``; -1: the cell is skipped.
    """
    rows = as_count_rows(counts)
    n_genes = rows.shape[1]
    sizes = np.bincount(groups[groups >= 0], minlength=n_groups)
    weights = 1.0 / np.maximum(sizes, 1)
    cpm, detected = np.zeros((n_groups, n_genes)), np.zeros((n_groups, n_genes))
    totals = np.zeros(n_groups)
    for start, block in rows.blocks():
        codes = groups[start : start + block.shape[0]]
        keep = np.flatnonzero(codes >= 0)
        if not keep.size:
            continue
        member = sp.csr_matrix((weights[codes[keep]], (codes[keep], keep)), shape=(n_groups, block.shape[0]))
        block = sp.csr_matrix(block, dtype=np.float64)
        cpm += (member @ normalize.cpm(block)).toarray()
        detected += (member @ (block > 0).astype(np.float64)).toarray()
        totals += np.bincount(codes[keep], np.asarray(block.sum(axis=1)).ravel()[keep], minlength=n_groups)
    empty = sizes == 0  # a group without cells has no mean (NaN), as the mean of no rows
    cpm[empty], detected[empty] = np.nan, np.nan
    return GroupMeans(
        cpm=np.ascontiguousarray(cpm.T),  # C order: the signature parameter is built from it
        detection=np.ascontiguousarray(detected.T),
        totals=totals / np.where(empty, np.nan, sizes),
        sizes=sizes,
    )


def group_means_by_part(
    counts, labels: np.ndarray, cell_types: Sequence[str], parts: Sequence[np.ndarray]
) -> list[GroupMeans]:
    """:func:`group_means` by cell type of the cells of each part (e.g. training and validation
    cells), in one pass over ``counts``."""
    n_types = len(cell_types)
    groups = np.full(len(labels), -1, dtype=np.int64)
    for i, cells in enumerate(parts):
        codes = type_codes(labels[cells], cell_types)
        groups[cells] = np.where(codes >= 0, codes + i * n_types, -1)
    means = group_means(counts, groups, n_types * len(parts))
    columns = [slice(i * n_types, (i + 1) * n_types) for i in range(len(parts))]
    return [
        GroupMeans(means.cpm[:, c], means.detection[:, c], means.totals[c], means.sizes[c]) for c in columns
    ]


def pooled_means(parts: Sequence[GroupMeans]) -> GroupMeans:
    """The :class:`GroupMeans` of the union of the parts' cells (each part weighted by its group
    sizes; NaN for a group without cells in any part)."""
    sizes = np.sum([part.sizes for part in parts], axis=0)
    weights = [part.sizes / np.where(sizes > 0, sizes, np.nan) for part in parts]

    def pool(values: list[np.ndarray]) -> np.ndarray:
        return np.sum([np.nan_to_num(v) * w for v, w in zip(values, weights, strict=True)], axis=0)

    return GroupMeans(
        cpm=pool([part.cpm for part in parts]),
        detection=pool([part.detection for part in parts]),
        totals=pool([part.totals for part in parts]),
        sizes=sizes,
    )


def mean_cpm_by_type(counts, labels: np.ndarray, cell_types: Sequence[str]) -> np.ndarray:
    """``(n_genes, n_types)`` mean over the cells of each type of their CPM.

    This is the initial signature ``S`` of HP-VADE and the signature of the NNLS baseline.
    """
    return group_means(counts, type_codes(labels, cell_types), len(cell_types)).cpm


def detection_by_type(counts, labels: np.ndarray, cell_types: Sequence[str]) -> np.ndarray:
    """``(n_genes, n_types)`` share of the cells of each type in which a gene is detected."""
    return group_means(counts, type_codes(labels, cell_types), len(cell_types)).detection


def marker_scores(
    mean_cpm: np.ndarray, detection: np.ndarray, *, min_mean_cpm: float, min_cell_fraction: float
) -> np.ndarray:
    """``(n_genes, n_types)`` marker score ``log1p(S_k/100) - max_{j != k} log1p(S_j/100)``;
    ``-inf`` where the gene is not expressed in type k, its mean CPM there is below
    ``min_mean_cpm`` or it is detected in fewer than ``min_cell_fraction`` of the type's cells
    (a gene high in a few cells looks like a strong marker, but new cells of the type lack it)."""
    log_mean = normalize.bulk_to_network(mean_cpm)
    scores = np.full(mean_cpm.shape, -np.inf)
    for k in range(mean_cpm.shape[1]):
        others = np.delete(log_mean, k, axis=1).max(axis=1) if mean_cpm.shape[1] > 1 else 0.0
        expressed = (mean_cpm[:, k] > 0) & (mean_cpm[:, k] >= min_mean_cpm)
        eligible = expressed & (detection[:, k] >= min_cell_fraction)
        scores[eligible, k] = (log_mean[:, k] - others)[eligible]
    return scores


def consistent_marker_scores(
    counts, labels: np.ndarray, cell_types: Sequence[str], *, min_mean_cpm: float,
    min_cell_fraction: float, seed: int = 0, cells: np.ndarray | None = None,
) -> np.ndarray:
    """The smaller of the :func:`marker_scores` of two disjoint halves of the cells.

    Ranking genes by the score of the cells they were chosen on overrates the winners (a gene
    chosen for a high fold change in these cells has a lower one in new cells); requiring the
    fold change in both halves keeps markers that hold across cells. ``cells`` (default: all)
    are the rows split into halves; both halves are summed in one pass over the counts.
    """
    cells = np.arange(len(labels)) if cells is None else np.asarray(cells)
    n_types = len(cell_types)
    halves = split_indices(cells.size, {"half": 0.5}, seed=seed, groups=labels[cells]).values()
    groups = np.full(len(labels), -1, dtype=np.int64)
    for h, half in enumerate(halves):
        groups[cells[half]] = type_codes(labels[cells[half]], cell_types) + h * n_types
    means = group_means(counts, groups, 2 * n_types)
    mean_cpm, detection = means.cpm, means.detection
    return np.minimum(*[
        marker_scores(
            mean_cpm[:, h * n_types : (h + 1) * n_types],
            detection[:, h * n_types : (h + 1) * n_types],
            min_mean_cpm=min_mean_cpm,
            min_cell_fraction=min_cell_fraction,
        )
        for h in range(2)
    ])


def top_genes(
    gene_names: Sequence[str], scores: np.ndarray, *, n_per_type: int | None, exclude_patterns: Sequence[str]
) -> np.ndarray:
    """Indices (sorted) of the union over types of the ``n_per_type`` genes with the highest
    ``scores[:, k]``, leaving out genes matching ``exclude_patterns`` and genes that are no type's
    candidate (score ``-inf`` everywhere); with ``n_per_type`` None, every remaining gene."""
    keep = np.isfinite(scores).any(axis=1) & ~matching_any(gene_names, exclude_patterns)
    if n_per_type is None:
        return np.flatnonzero(keep)
    chosen: set[int] = set()
    for k in range(scores.shape[1]):
        score = np.where(keep, scores[:, k], -np.inf)
        top = np.argsort(-score)[:n_per_type]
        chosen.update(int(i) for i in top[np.isfinite(score[top])])
    return np.array(sorted(chosen), dtype=np.int64)


def select_genes(
    gene_names: Sequence[str],
    scores: np.ndarray,
    *,
    n_per_type: int | None,
    exclude_patterns: Sequence[str],
) -> np.ndarray:
    """Indices (sorted) of the genes a model uses: :func:`top_genes` of the marker ``scores``
    (:func:`marker_scores`), leaving out ``exclude_patterns`` (regular expressions, e.g.
    mitochondrial and ribosomal genes, whose share differs most between protocols).

    Raises
    ------
    GeneSpaceError
        Fewer than ``MIN_GENES`` genes are left.
    """
    chosen = top_genes(gene_names, scores, n_per_type=n_per_type, exclude_patterns=exclude_patterns)
    if chosen.size < MIN_GENES:
        raise GeneSpaceError(
            f"only {chosen.size} genes are left after gene selection (need {MIN_GENES}); lower "
            "min_mean_cpm, raise n_marker_genes or check exclude_gene_patterns in the config, or "
            "give a bulk with more genes in common with the reference (--bulk of `deconvolve run`, "
            "--genes-from of `deconvolve train`)."
        )
    logger.info(
        "selected %d genes (%s)", chosen.size,
        "all expressed genes" if n_per_type is None else f"up to {n_per_type} markers per cell type",
    )
    return chosen
