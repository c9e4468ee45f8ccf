"""Correlation helpers shared by the metric registries."""

from __future__ import annotations

import numpy as np


def pearson(a, b) -> float:
    """Pearson r of two equal-length vectors; NaN when either side is constant (r undefined)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
