"""Bulk values as deconvolution needs them: linear (counts, CPM/TPM, microarray intensities).

Mixtures of cells add up only on a linear scale. Raw counts, CPM/TPM and linear microarray
intensities (non-integer, unnormalised rows: audited as ``normalized``) are accepted; log
values, the usual way microarray data are distributed, are refused with how to un-log them.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np

from cellsmith.data import require_linear
from cellsmith.data.audit import Scale, describe_source
from cellsmith.errors import InputError, ScaleError

#: Largest value of data that may be log2 (log2 of 16-bit microarray intensities is <= 16).
LOG2_MAX = 25.0

UNLOG_HINT = (
    " If these are log2 values (microarray RMA/MAS5 log2 intensities, log2 TPM/CPM), un-log them "
    "first: 2**x, minus the offset if one was added before the log (log2(x + 1): 2**x - 1); in "
    "Python `2 ** df - 1`, in R `2^x - 1`."
)


def require_linear_bulk(bulk: ad.AnnData, *, layer: str | None = None) -> tuple[Any, Scale]:
    """:func:`cellsmith.data.require_linear`, with un-log advice when the values look like log2.

    Raises
    ------
    ScaleError
        Log, scaled, NaN or Inf values.
    """
    try:
        return require_linear(bulk, layer=layer)
    except ScaleError as err:
        values = bulk.layers[layer] if layer is not None else bulk.X
        data = values.data if hasattr(values, "data") and not isinstance(values, np.ndarray) else np.asarray(values)
        finite = data[np.isfinite(data)] if data.size else data
        if finite.size and finite.min() >= 0 and finite.max() <= LOG2_MAX:
            raise ScaleError(f"{err}{UNLOG_HINT}") from None
        raise


def require_expressed_samples(values: Any, bulk: ad.AnnData, genes: str) -> None:
    """Refuse bulk samples whose ``values`` (samples x ``genes``, linear) are all zero.

    Raises
    ------
    InputError
        Naming up to five such samples.
    """
    totals = np.asarray(values.sum(axis=1)).ravel()
    empty = np.flatnonzero(totals <= 0)
    if empty.size:
        raise InputError(
            f"{describe_source(bulk)}: samples {list(bulk.obs_names[empty][:5])} have no expression in "
            f"{genes}; check the gene names and the sample orientation (--orientation)."
        )
