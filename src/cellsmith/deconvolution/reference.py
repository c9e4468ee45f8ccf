"""From a labelled raw-count reference to what HP-VADE trains on: genes, signature, cells.

Functions here take arrays (counts, labels) so that the user-facing class keeps the AnnData
contract and the steps stay testable one by one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from cellsmith._logging import logger
from cellsmith.data import normalize
from cellsmith.data.splits import split_indices
from cellsmith.errors import GeneSpaceError

#: Fewest genes a model can be trained on.
MIN_GENES = 20


def _by_type(matrix, labels: np.ndarray, cell_types: Sequence[str]) -> np.ndarray:
    """``(n_genes, n_types)`` column means of ``matrix`` over the rows of each type."""
    return np.stack([np.asarray(matrix[labels == t].mean(axis=0)).ravel() for t in cell_types], axis=1)


def mean_cpm_by_type(counts, labels: np.ndarray, cell_types: Sequence[str]) -> np.ndarray:
    """``(n_genes, n_types)`` mean over the cells of each type of their CPM.

    This is the initial signature ``S`` of HP-VADE and the signature of the NNLS baseline.
    """
    return _by_type(normalize.cpm(sp.csr_matrix(counts, dtype=np.float64)), labels, cell_types)


def detection_by_type(counts, labels: np.ndarray, cell_types: Sequence[str]) -> np.ndarray:
    """``(n_genes, n_types)`` share of the cells of each type in which a gene is detected."""
    return _by_type(sp.csr_matrix(counts) > 0, labels, cell_types)


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
    min_cell_fraction: float, seed: int = 0,
) -> np.ndarray:
    """The smaller of the :func:`marker_scores` of two disjoint halves of the cells.

    Ranking genes by the score of the cells they were chosen on overrates the winners (a gene
    chosen for a high fold change in these cells has a lower one in new cells); requiring the
    fold change in both halves keeps markers that hold across cells.
    """
    halves = split_indices(len(labels), {"half": 0.5}, seed=seed, groups=labels).values()
    return np.minimum(*[
        marker_scores(
            mean_cpm_by_type(counts[half], labels[half], cell_types),
            detection_by_type(counts[half], labels[half], cell_types),
            min_mean_cpm=min_mean_cpm,
            min_cell_fraction=min_cell_fraction,
        )
        for half in halves
    ])


def select_genes(
    gene_names: Sequence[str],
    scores: np.ndarray,
    *,
    n_per_type: int | None,
    exclude_patterns: Sequence[str],
) -> np.ndarray:
    """Indices (sorted) of the genes a model uses.

    Genes matching ``exclude_patterns`` (regular expressions, e.g. mitochondrial and ribosomal
    genes, whose share differs most between protocols) and genes that are no type's candidate
    (score ``-inf`` everywhere) are dropped. With ``n_per_type``, the union over types of the
    ``n_per_type`` genes with the highest ``scores[:, k]`` is kept (see :func:`marker_scores`);
    with None every remaining gene.
    """
    names = np.asarray(gene_names, dtype=str)
    keep = np.isfinite(scores).any(axis=1)
    for pattern in exclude_patterns:
        regex = re.compile(pattern)
        keep &= ~np.array([bool(regex.search(n)) for n in names])
    if n_per_type is None:
        chosen = np.flatnonzero(keep)
    else:
        chosen_set: set[int] = set()
        for k in range(scores.shape[1]):
            score = np.where(keep, scores[:, k], -np.inf)
            top = np.argsort(-score)[:n_per_type]
            chosen_set.update(int(i) for i in top[np.isfinite(score[top])])
        chosen = np.array(sorted(chosen_set), dtype=np.int64)
    if chosen.size < MIN_GENES:
        raise GeneSpaceError(
            f"only {chosen.size} genes are left after gene selection (need {MIN_GENES}); lower "
            "min_mean_cpm, raise n_marker_genes or check exclude_gene_patterns in the config, or "
            "pass a bulk with more genes in common with the reference to --genes-from."
        )
    logger.info(
        "selected %d genes (%s)", chosen.size,
        "all expressed genes" if n_per_type is None else f"up to {n_per_type} markers per cell type",
    )
    return chosen
