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
        ``(n_genes,)`` natural-log platform factor of each gene (bulk over reference).
    weight
        The shrinkage weight applied to the raw mean log-ratios.
    """

    proportions: np.ndarray
    reconstructed: np.ndarray
    corrected: np.ndarray
    log_factors: np.ndarray
    weight: float


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


def adapt(bulk_cpm: np.ndarray, fit: FitFunction, *, n_iterations: int = N_ITERATIONS) -> Adaptation:
    """Alternate ``fit`` and gene-wise factor estimation on a set of bulk samples.

    Parameters
    ----------
    bulk_cpm
        ``(n_samples, n_genes)`` CPM over the model's genes: the whole set (the factors are
        shared by its samples).
    fit
        Proportions and reconstruction for a bulk CPM matrix (HP-VADE's network, or NNLS).
    """
    bulk = np.asarray(bulk_cpm, dtype=np.float64)
    corrected = bulk
    log_factors, weight = np.zeros(bulk.shape[1]), 0.0
    proportions, reconstructed = fit(corrected)
    for _ in range(n_iterations):
        log_factors, weight = platform_log_factors(bulk, reconstructed)
        corrected = normalize.cpm(bulk * np.exp(-log_factors))
        proportions, reconstructed = fit(corrected)
    return Adaptation(proportions, reconstructed, corrected, log_factors, weight)
