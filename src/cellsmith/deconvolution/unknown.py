"""The ``unknown`` fraction: bulk signal the reference's cell types cannot produce.

Proportions fitted on marker genes sum to 1 over the reference types, so neutrophils in whole
blood or cancer cells in a tumour inflate the nearest reference type. Two groups of genes tell
how much of a bulk the reference types explain, in the spirit of EPIC's "other cells":

- *anchors*: genes expressed at a similar level in every reference type (housekeeping-like);
  cells of any type, known or not, carry them, so their level measures all the cells;
- *markers* (the model's genes, less any anchor): only the reference types carry them.

With ``q`` the read fractions of the reference types, the bulk over the reference is, per gene,
``(1 - u) * f_g`` on markers and ``f_g`` on anchors (``u``: the unknown share of reads,
``f_g``: gene-wise platform noise). The median log-ratio over markers minus that over anchors
estimates ``log(1 - u)``; the scale of the bulk (counts, CPM, intensities) cancels out, so any
linear bulk works and no normalisation over a shared gene universe is needed. ``u`` is a share
of reads; :func:`cellsmith.deconvolution.content.unknown_cells` turns it into a share of cells.
The samples of a set share the anchors' offset, and none can hold a negative unknown: a set whose
samples come out below 0 is lowered as a whole (:func:`set_floor`).

Measured (``benchmarks/deconvolution_real.py``, which also prints the true share of reads): the
level is about right on PBMC and 2-4.4x too low on whole blood and melanoma lymph nodes, while
the ranking holds. The level rests on the anchors' median, and the anchors carry platform factors
of their own: with the 30-50 genes a sparse 10x reference offers, that median moves by 0.12-0.18 in
log on the shared real sets (11-16 % of the reads), and on simulated sets without unknown cells it
gave up to 0.08 (up to 0.33 while the anchors moved with the seed). Broader anchor sets cut that noise but
hold genes neutrophils do not carry, and lose them (BENCHMARKS.md, "Why the unknown's level
cannot be pinned").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import median_abs_deviation

from cellsmith.deconvolution.reference import matching_any

#: Fewest anchors an unknown fraction is estimated from. Measured on GSE60424 (seed 1): 15
#: anchors qualified and gave r 0.91 with the neutrophils, where no estimate left the known types
#: to absorb them (pooled CCC 0.27 without, 0.43 with).
MIN_ANCHORS = 10
#: Anchor genes kept (the most even across types among the eligible ones).
N_ANCHORS = 200
#: An anchor's mean CPM in every type, and the share of each type's cells detecting it.
ANCHOR_MIN_CPM, ANCHOR_MIN_DETECTION = 20.0, 0.5
#: Markers enter the median only where the reconstruction expects at least this CPM (of the
#: training gene universe): weaker genes are mostly noise.
MARKER_MIN_CPM = 5.0
#: Samples whose unknown fraction exceeds this are flagged in ``fit.csv``.
UNKNOWN_FLAG = 0.1
#: Quantile of a set's log(1 - u) estimates that sets its floor (:func:`set_floor`): the
#: upper decile rather than the maximum, so that one odd sample does not set every sample's level.
SET_FLOOR_QUANTILE = 0.9


@dataclass
class Anchors:
    """What a model keeps to estimate the unknown fraction (``anchors.csv`` of its folder).

    Attributes
    ----------
    genes
        Anchor gene names.
    signature
        ``(n_anchors, n_types)`` mean CPM of each type over the training gene universe.
    marker_share
        ``(n_types,)`` share of each type's counts (over the training universe) that falls on
        the model's genes: converts the marker signature (CPM over the model's genes) to the
        universe's scale.
    """

    genes: list[str]
    signature: np.ndarray
    marker_share: np.ndarray

    def to_frame(self, cell_types: Sequence[str]) -> pd.DataFrame:
        """Anchors x types CPM, plus one row ``__marker_share__`` (the file format)."""
        frame = pd.DataFrame(self.signature, index=self.genes, columns=list(cell_types))
        frame.loc[MARKER_SHARE_ROW] = self.marker_share
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Anchors:
        """Inverse of :meth:`to_frame`."""
        share = frame.loc[MARKER_SHARE_ROW].to_numpy(dtype=np.float64)
        body = frame.drop(index=MARKER_SHARE_ROW)
        return cls(list(body.index.astype(str)), body.to_numpy(dtype=np.float64), share)


MARKER_SHARE_ROW = "__marker_share__"


def choose_anchors(
    mean_cpm: np.ndarray,
    detection: np.ndarray,
    gene_names: Sequence[str],
    *,
    exclude: np.ndarray | None = None,
    exclude_patterns: Sequence[str],
    n_anchors: int = N_ANCHORS,
) -> np.ndarray:
    """Indices of the genes most even across types among those expressed in every type.

    Parameters
    ----------
    mean_cpm, detection
        ``(n_genes, n_types)`` over the training gene universe.
    exclude
        Boolean mask of genes never used as anchors: the reference's marker genes (the model's
        marker rule, applied to every cell). Among the genes every type expresses, markers chosen
        by fold change still differ between types (most of them are lymphoid on a PBMC
        reference): as anchors they make the unknown vanish.
    exclude_patterns
        Regular expressions of genes whose share differs most between protocols
        (mitochondrial, ribosomal): they would carry the platform, not the cells.
    """
    eligible = ~matching_any(gene_names, exclude_patterns)
    if exclude is not None:
        eligible &= ~np.asarray(exclude, dtype=bool)
    eligible &= np.nan_to_num(mean_cpm, nan=0.0).min(axis=1) >= ANCHOR_MIN_CPM
    eligible &= np.nan_to_num(detection, nan=0.0).min(axis=1) >= ANCHOR_MIN_DETECTION
    candidates = np.flatnonzero(eligible)
    spread = np.log(mean_cpm[candidates].max(axis=1) / mean_cpm[candidates].min(axis=1))
    return np.sort(candidates[np.argsort(spread, kind="stable")[:n_anchors]])


def read_fractions(proportions: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Cell fractions -> read fractions (each type weighted by its mRNA per cell)."""
    weighted = np.asarray(proportions, dtype=np.float64) * np.asarray(content, dtype=np.float64)
    return weighted / weighted.sum(axis=1, keepdims=True)


def _log_ratios(values: np.ndarray, expected: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """``log(values / expected)`` where ``usable``, NaN elsewhere."""
    return np.where(usable, np.log(np.where(usable, values, 1.0) / np.where(usable, expected, 1.0)), np.nan)


def _row_medians(ratio: np.ndarray) -> np.ndarray:
    """Per row, the median of the non-NaN values (NaN for a row without any)."""
    result = np.full(ratio.shape[0], np.nan)
    has_any = np.isfinite(ratio).any(axis=1)
    result[has_any] = np.nanmedian(ratio[has_any], axis=1)
    return result


def _anchor_log_ratios(bulk_anchors: np.ndarray, read_fraction: np.ndarray, anchors: Anchors) -> np.ndarray:
    """``(n_samples, n_anchors)`` log of the bulk over what the known types would give, NaN where
    the bulk lacks an anchor or measures 0."""
    usable = np.isfinite(bulk_anchors) & (bulk_anchors > 0)
    return _log_ratios(np.nan_to_num(bulk_anchors, nan=0.0), read_fraction @ anchors.signature.T, usable)


#: Standard error of a median over n normal values, in units of their SD times 1 / sqrt(n).
_MEDIAN_SE = np.sqrt(np.pi / 2)


def anchor_noise(bulk_anchors: np.ndarray, read_fraction: np.ndarray, anchors: Anchors) -> np.ndarray:
    """``(n_samples,)`` standard error, in natural log, of the anchors' median log-ratio.

    Each anchor carries a platform factor of its own, so the anchors' log-ratios (bulk over
    expected) spread; their median, on which the unknown's level rests, moves with that spread
    by about ``1.25 * SD / sqrt(n)`` (robust SD from the median absolute deviation). It is a
    floor on the level's uncertainty, not an interval: it leaves out effects common to the
    anchors, such as cells the reference lacks carrying fewer anchor reads. NaN with fewer than
    2 anchors measured.
    """
    ratio = _anchor_log_ratios(bulk_anchors, read_fraction, anchors)
    n = np.isfinite(ratio).sum(axis=1)
    result = np.full(ratio.shape[0], np.nan)
    has_two = n >= 2
    spread = median_abs_deviation(ratio[has_two], axis=1, scale="normal", nan_policy="omit")
    result[has_two] = _MEDIAN_SE * spread / np.sqrt(n[has_two])
    return result


def known_log_share(
    bulk_markers: np.ndarray,
    bulk_anchors: np.ndarray,
    read_fraction: np.ndarray,
    signature: np.ndarray,
    anchors: Anchors,
    model_genes: Sequence[str],
) -> np.ndarray:
    """``(n_samples,)`` estimate of ``log(1 - u)`` per sample, before the set-level floor.

    Parameters
    ----------
    bulk_markers, bulk_anchors
        The bulk's linear values (any scale, the same for both) on the model's genes and on the
        anchors (NaN where the bulk lacks an anchor); one row per sample of the set.
    read_fraction
        ``(n_samples, n_types)`` read fractions of the fitted known types.
    signature
        ``(n_genes, n_types)`` the model's marker signature, CPM over the model's genes.
    model_genes
        Names of the model's genes (the columns of ``bulk_markers``). A model gene that is also an
        anchor (anchors avoid the reference's markers, not the model's) is carried by every cell:
        it stays out of the markers' side.

    NaN where no marker or no anchor was measured.
    """
    only_markers = ~np.isin(np.asarray(model_genes, dtype=str), anchors.genes)
    bulk_markers, signature = bulk_markers[:, only_markers], signature[only_markers]
    expected_markers = read_fraction @ (signature * anchors.marker_share).T
    markers_usable = (bulk_markers > 0) & (expected_markers >= MARKER_MIN_CPM)
    return _row_medians(_log_ratios(bulk_markers, expected_markers, markers_usable)) - _row_medians(
        _anchor_log_ratios(bulk_anchors, read_fraction, anchors)
    )


def set_floor(log_known: np.ndarray) -> float:
    """How far, in natural log, a set's ``log(1 - u)`` is lowered: its upper decile when above 0.

    No sample can hold a negative unknown. The samples of one bulk set share the platform and the
    anchor genes, so the anchors' platform offset is one value for the set. An estimate above 0
    therefore shows that the anchors read low by at least that much, in every sample of the set:
    the set is lowered by that amount, instead of clipping each sample at 0 on its own. That only
    ever raises the unknown. Where the anchors read high, nothing here can see it. For one sample
    it changes nothing (the clip at 0 would give the same). 0 when no sample has an estimate.
    """
    finite = log_known[np.isfinite(log_known)]
    if finite.size == 0:
        return 0.0
    return max(0.0, float(np.quantile(finite, SET_FLOOR_QUANTILE)))


def unknown_fraction(log_known: np.ndarray, floor: float) -> np.ndarray:
    """``(n_samples,)`` share of each sample the reference types do not explain, in [0, 1], from
    :func:`known_log_share` of one set measured on one platform, lowered by its ``floor``
    (:func:`set_floor`); 0 where it is NaN."""
    floored = log_known - floor
    return np.clip(1.0 - np.exp(np.nan_to_num(floored, nan=0.0)), 0.0, 1.0)


def with_unknown(proportions: pd.DataFrame, unknown: np.ndarray | None) -> pd.DataFrame:
    """Cell-type columns scaled by ``1 - unknown``, and the ``unknown`` column (rows sum to 1);
    with None (no estimate), the proportions unchanged beside an ``unknown`` column of NaN."""
    if unknown is None:
        return proportions.assign(**{UNKNOWN: np.nan})
    unknown = np.asarray(unknown, dtype=np.float64)
    scaled = proportions.mul(1.0 - unknown, axis=0)
    scaled[UNKNOWN] = unknown
    return scaled


#: Column of the unknown fraction in proportions tables.
UNKNOWN = "unknown"
#: Column of :func:`anchor_noise` in fit tables.
ANCHOR_SE = f"{UNKNOWN}_anchor_se"
#: Column of :func:`set_floor` (of HP-VADE's estimate, one value per set) in fit tables.
SET_FLOOR = f"{UNKNOWN}_set_floor"
