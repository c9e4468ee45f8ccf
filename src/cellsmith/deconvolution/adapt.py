"""Prediction-time platform adaptation: gene-wise factors between the reference and a bulk set.

A 10x 3' reference and a full-length (or microarray) bulk measure each gene with its own
efficiency: the bulk looks like ``f_g * (S p)_g`` with a factor ``f_g`` per gene shared by all
samples of the set. The factors are estimated from the bulk samples being deconvolved only
(never their truth), by alternating two steps, as in BayesPrism's reference update or
CIBERSORTx's S-mode:

1. fit proportions to the bulk divided by the current factors;
2. re-estimate ``log f_g`` as the mean over samples of ``log(bulk / reconstruction)``, shrunk
   towards 0 by how much of it is between-gene spread rather than sample noise, and by the
   number of samples (:data:`PRIOR_SAMPLES`).

Before the factors, one exponent restores the bulk's dynamic range: ``bulk ** k`` with ``k`` the
inverse slope of ``log(bulk)`` on ``log(reconstruction)`` (:func:`range_exponent`). A microarray
narrows the range of expression, which gene-wise factors cannot undo: the effect follows each
gene's level in each sample, not the gene. The shared real RNA-seq sets are narrower than the
10x reference too (``deconvolve run``: k 1.11-1.50); the markers, chosen for their extremes in the
reference, may regress towards the mean in any other measurement. Measured
(``benchmarks/deconvolution_platform.py --compressions 1,0.8,0.6``, gene factors SD 0.5): pooled
CCC 0.969 with the bulk's CPM raised to the power 0.6, against 0.830 with gene factors only and
0.697 without adaptation; 0.983 without compression (0.984 with factors only). On the shared
real sets the known types' Pearson r rose on three and held on the fourth (BENCHMARKS.md).

Only relative factors matter (the bulk is re-normalised to CPM). A variant that centred the
factors within each type's marker genes (so that adaptation could never move a type's level)
was measured and dropped: it lost on all four shared real sets (``benchmarks/deconvolution_real.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cellsmith.data import normalize

#: CPM added before logs of bulk and reconstruction (genes near 0 CPM carry no ratio).
PSEUDO_CPM = 1.0
#: Alternations of fit and factor estimation (measured: the proportions settle by 3-4).
N_ITERATIONS = 5
#: Prior weight, in samples, of "no platform effect": the share of the estimated log factors
#: that is corrected is ``n / (n + PRIOR_SAMPLES)`` for a set of ``n`` samples. The per-gene
#: mean log-ratio carries the fit's composition errors as well as the platform; with few
#: samples of similar composition (2 PBMC donors) these do not average out, and a full
#: correction locks them in. Measured: 5 is >= no adaptation on all four shared real sets
#: (2-12 samples) and corrects almost fully on simulated sets of 200 samples, where a full
#: correction is best (benchmarks/deconvolution_real.py, deconvolution_platform.py).
PRIOR_SAMPLES = 5.0

#: ``fit(bulk_cpm) -> (proportions, reconstructed_cpm)``, both per sample.
FitFunction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Adaptation:
    """Result of :func:`adapt`.

    Attributes
    ----------
    proportions, reconstructed
        The fit to the corrected bulk (samples x types, samples x genes CPM).
    corrected
        The bulk CPM divided by the platform factors (re-normalised to CPM).
    log_factors
        ``(n_genes,)`` natural-log platform factor of each gene (bulk over reference), after
        the exponent.
    weight
        The shrinkage weight applied to the raw mean log-ratios.
    exponent
        The power the bulk CPM was raised to before the factors (:func:`range_exponent`).
    """

    proportions: np.ndarray
    reconstructed: np.ndarray
    corrected: np.ndarray
    log_factors: np.ndarray
    weight: float
    exponent: float = 1.0


def log_ratios(bulk_cpm: np.ndarray, reconstructed_cpm: np.ndarray) -> np.ndarray:
    """``log((bulk + 1) / (reconstruction + 1))`` per sample and gene (CPM)."""
    return np.log(np.asarray(bulk_cpm, dtype=np.float64) + PSEUDO_CPM) - np.log(
        np.asarray(reconstructed_cpm, dtype=np.float64) + PSEUDO_CPM
    )


def shrinkage_weight(ratios: np.ndarray) -> float:
    """Empirical-Bayes weight ``tau^2 / (tau^2 + sigma^2 / n)`` of the per-gene mean log-ratio.

    ``sigma^2`` is the median over genes of the sample variance of the log-ratio (what is not
    shared by the samples: composition errors and noise), ``tau^2`` the between-gene variance of
    the means left once that noise is removed (the platform effect). One sample cannot tell the
    two apart: 1 (the prior on the number of samples, :data:`PRIOR_SAMPLES`, still shrinks).
    """
    n = ratios.shape[0]
    if n < 2:
        return 1.0
    noise = float(np.median(ratios.var(axis=0, ddof=1))) / n
    spread = float(ratios.mean(axis=0).var())
    tau2 = max(spread - noise, 0.0)
    return tau2 / (tau2 + noise) if tau2 + noise > 0 else 0.0


def platform_log_factors(bulk_cpm: np.ndarray, reconstructed_cpm: np.ndarray) -> tuple[np.ndarray, float]:
    """Per gene, the mean log-ratio of bulk to reconstruction times :func:`shrinkage_weight`
    and ``n / (n + PRIOR_SAMPLES)`` (see :data:`PRIOR_SAMPLES`)."""
    ratios = log_ratios(bulk_cpm, reconstructed_cpm)
    n = ratios.shape[0]
    weight = shrinkage_weight(ratios) * n / (n + PRIOR_SAMPLES)
    return weight * ratios.mean(axis=0), weight


#: Genes enter the range estimate where the reconstruction has at least this CPM: weaker ones
#: sit on the pseudo-count, which flattens the slope.
RANGE_MIN_CPM = 10.0
#: Bounds of the exponent that restores the bulk's dynamic range.
EXPONENT_BOUNDS = (0.5, 2.0)


def range_exponent(bulk_cpm: np.ndarray, reconstructed_cpm: np.ndarray) -> float:
    """``1 / slope`` of ``log(bulk)`` on ``log(reconstruction)`` over all samples and the genes the
    reconstruction expresses (>= :data:`RANGE_MIN_CPM`), within :data:`EXPONENT_BOUNDS`."""
    x = np.log(np.asarray(reconstructed_cpm, dtype=np.float64) + PSEUDO_CPM).ravel()
    y = np.log(np.asarray(bulk_cpm, dtype=np.float64) + PSEUDO_CPM).ravel()
    keep = np.asarray(reconstructed_cpm).ravel() >= RANGE_MIN_CPM
    if keep.sum() < 3 or np.var(x[keep]) == 0:
        return 1.0
    slope = np.polyfit(x[keep], y[keep], 1)[0]
    return float(np.clip(1.0 / slope, *EXPONENT_BOUNDS)) if slope > 0 else 1.0


def adapt(
    bulk_cpm: np.ndarray, fit: FitFunction, *, n_iterations: int = N_ITERATIONS, restore_range: bool = True
) -> Adaptation:
    """Restore the bulk's dynamic range, then alternate ``fit`` and gene-wise factor estimation
    on a set of bulk samples.

    Parameters
    ----------
    bulk_cpm
        ``(n_samples, n_genes)`` CPM over the model's genes: the whole set (the factors are
        shared by its samples).
    fit
        Proportions and reconstruction for a bulk CPM matrix (HP-VADE's network, or NNLS).
    restore_range
        Raise the bulk to :func:`range_exponent` first (False: gene-wise factors only).
    """
    bulk = np.asarray(bulk_cpm, dtype=np.float64)
    exponent = 1.0
    if restore_range:
        exponent = range_exponent(bulk, fit(bulk)[1])
        bulk = normalize.cpm(bulk**exponent)
    corrected = bulk
    log_factors, weight = np.zeros(bulk.shape[1]), 0.0
    proportions, reconstructed = fit(corrected)
    for _ in range(n_iterations):
        log_factors, weight = platform_log_factors(bulk, reconstructed)
        corrected = normalize.cpm(bulk * np.exp(-log_factors))
        proportions, reconstructed = fit(corrected)
    return Adaptation(proportions, reconstructed, corrected, log_factors, weight, exponent)
