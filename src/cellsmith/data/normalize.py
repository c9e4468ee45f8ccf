"""The only module in cellsmith that changes the scale of expression values.

Mixtures of cells are linear in count / CPM space, so mixing always happens before any
transform here. Logs are taken only where a network or a loss needs a bounded input, and each
transform is one function that training, validation and inference all call.

Every function accepts a dense NumPy array, a SciPy sparse matrix (rows = cells or samples) or
a torch tensor, and returns the same kind (sparse stays sparse, nothing is densified).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import scipy.sparse as sp

Matrix = TypeVar("Matrix")

#: The target sum of single-cell log-normalisation (log1p of counts per 10,000).
CP10K = 1e4
#: The target sum of counts-per-million.
CPM = 1e6


def _is_torch(x: object) -> bool:
    return type(x).__module__.startswith("torch")


def _row_sums(x):
    if sp.issparse(x):
        return np.asarray(x.sum(axis=1)).ravel()
    return x.sum(-1)


def scale_rows(x, factors):
    """Multiply row i of ``x`` by ``factors[i]`` without densifying sparse input."""
    if sp.issparse(x):
        return sp.diags(factors.astype(np.float64)) @ x.tocsr()
    return x * factors[..., None]


def normalize_total(x: Matrix, target_sum: float = CP10K) -> Matrix:
    """Scale every row to sum to ``target_sum``; all-zero rows stay zero.

    Parameters
    ----------
    x
        Non-negative counts, rows = cells (or samples).
    target_sum
        The total every row is scaled to (1e4 for single cells, 1e6 for CPM).
    """
    totals = _row_sums(x)
    if _is_torch(x):
        factors = target_sum / totals.clamp_min(1e-12)
        factors = factors * (totals > 0)
    else:
        totals = np.asarray(totals, dtype=np.float64)
        factors = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    out = scale_rows(x, factors)
    if sp.issparse(out):
        return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32)
    return out


def rescale_to_totals(x: Matrix, totals: np.ndarray) -> Matrix:
    """Scale row i of ``x`` to sum to ``totals[i]`` (all-zero rows stay zero): undoes a
    ``normalize_total`` when ``totals`` are the rows' original sums."""
    sums = np.asarray(_row_sums(x), dtype=np.float64)
    totals = np.asarray(totals, dtype=np.float64)
    return scale_rows(x, np.divide(totals, sums, out=np.zeros_like(totals), where=sums > 0))


def cpm(x: Matrix, target_sum: float = CPM) -> Matrix:
    """Counts per million (every row sums to ``target_sum``, 1e6 by default)."""
    return normalize_total(x, target_sum=target_sum)


def _zero_preserving(x: Matrix, numpy_fn: Callable[[np.ndarray], np.ndarray], tensor_method: str) -> Matrix:
    """``numpy_fn`` applied to every value of ``x`` (an array, a sparse matrix: its stored values
    only, as ``numpy_fn(0) == 0``, or a tensor: its method ``tensor_method``)."""
    if sp.issparse(x):
        out = x.copy()
        out.data = numpy_fn(out.data)
        return out
    if _is_torch(x):
        return getattr(x, tensor_method)()
    return numpy_fn(x)


def log1p(x: Matrix) -> Matrix:
    """Natural ``log(1 + x)`` for arrays, sparse matrices (on stored values) and tensors."""
    return _zero_preserving(x, np.log1p, "log1p")


def log1p_normalize(x: Matrix, target_sum: float = CP10K) -> Matrix:
    """``log1p(normalize_total(x, target_sum))``: the single-cell scale of every network input.

    This is the one log-normalisation of cellsmith; real and reconstructed or predicted cells
    are both put on this scale by this function.
    """
    return log1p(normalize_total(x, target_sum=target_sum))


def bulk_to_network(bulk_cpm: Matrix) -> Matrix:
    """``log1p(cpm / 100)``: the network input of bulk samples given in CPM.

    CPM / 100 is counts per 10,000, so this is the same scale as log1p(CP10k) single cells,
    and bulk and single-cell branches of a model see values in the same range (0 to ~10).
    """
    return log1p(bulk_cpm / 100.0)


def expm1(x: Matrix) -> Matrix:
    """Inverse of :func:`log1p` (sparse-aware)."""
    return _zero_preserving(x, np.expm1, "expm1")


def standardize(x: Matrix, mean, sd) -> Matrix:
    """Per-gene standardisation ``(x - mean) / sd`` (``mean``, ``sd`` one value per column).

    Dense arrays and tensors only: centring makes every zero non-zero, so a sparse matrix would
    be densified whole; callers standardise one batch at a time.
    """
    if sp.issparse(x):
        raise TypeError("standardize takes a dense batch; densify one batch, not the whole matrix")
    return (x - mean) / sd
