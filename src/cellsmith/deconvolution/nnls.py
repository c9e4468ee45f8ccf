"""The baseline beside every HP-VADE result: non-negative least squares on the signature."""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls as scipy_nnls


def nnls_coefficients(bulk_cpm: np.ndarray, signature_cpm: np.ndarray) -> np.ndarray:
    """Per sample, ``argmin_{c >= 0} ||S c - b||_2`` in CPM space (linear mixing).

    Parameters
    ----------
    bulk_cpm
        ``(n_samples, n_genes)`` CPM.
    signature_cpm
        ``(n_genes, n_types)`` CPM.

    Returns
    -------
    ``(n_samples, n_types)`` non-negative coefficients (not normalised).
    """
    signature = np.asarray(signature_cpm, dtype=np.float64)
    bulk = np.asarray(bulk_cpm, dtype=np.float64)
    return np.stack([scipy_nnls(signature, b)[0] for b in bulk]) if len(bulk) else np.zeros((0, signature.shape[1]))


def nnls_proportions(bulk_cpm: np.ndarray, signature_cpm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NNLS coefficients normalised to sum to 1 (uniform when all are 0), and the raw ones."""
    coefficients = nnls_coefficients(bulk_cpm, signature_cpm)
    totals = coefficients.sum(axis=1, keepdims=True)
    n_types = coefficients.shape[1]
    proportions = np.divide(
        coefficients, totals, out=np.full_like(coefficients, 1.0 / n_types), where=totals > 0
    )
    return proportions, coefficients
