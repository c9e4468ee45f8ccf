"""Deconvolution metrics: pure functions of predicted and true proportions (samples x types).

Truth may hold NaN (not measured): every metric uses the finite (sample, type) pairs only.
Truth and predictions may name types differently or at another resolution; a
:class:`TypePair` list (from a mapping, :func:`parse_mapping`) sums columns on either side into
compared types, e.g. truth ``Tcells`` against predicted ``CD4 T`` + ``CD8 T``, or truth
``T.cells.CD4`` + ``T.cells.CD8`` against a predicted ``T``.

Mapping format (YAML or a dict), one entry per compared type::

    T cells: {truth: [Tcells], pred: [CD4 T, CD8 T]}   # full form; a single name needs no list
    Bcells: B                                          # short form: truth column: pred column(s)
    Monocytes: [Monocyte]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellsmith.errors import InputError
from cellsmith.metrics import correlation
from cellsmith.metrics.registry import MetricRegistry

REGISTRY = MetricRegistry("deconvolution")
#: Fewest finite samples for a per-type correlation (two points always correlate +-1).
MIN_SAMPLES_CORRELATION = 3


def _finite_pairs(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    ok = np.isfinite(p) & np.isfinite(t)
    return p[ok], t[ok]


def pearson(pred, truth) -> float:
    """Pearson r over finite pairs; NaN with fewer than 3 pairs or a constant side."""
    p, t = _finite_pairs(pred, truth)
    return correlation.pearson(p, t) if p.size >= MIN_SAMPLES_CORRELATION else float("nan")


def concordance(pred, truth) -> float:
    """Lin's concordance correlation coefficient over finite pairs (agreement, not only trend)."""
    p, t = _finite_pairs(pred, truth)
    if p.size < MIN_SAMPLES_CORRELATION:
        return float("nan")
    covariance = np.mean((p - p.mean()) * (t - t.mean()))
    denominator = p.var() + t.var() + (p.mean() - t.mean()) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else float("nan")


def _per_type(function, pred: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    return pd.Series({c: function(pred[c], truth[c]) for c in truth.columns}, dtype=float)


@REGISTRY.register("pearson_per_type")
def pearson_per_type(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Per cell type (column of ``truth``), Pearson r across samples."""
    return _per_type(pearson, pred, truth)


@REGISTRY.register("ccc_per_type")
def ccc_per_type(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Per cell type, Lin's CCC across samples."""
    return _per_type(concordance, pred, truth)


@REGISTRY.register("pearson")
def pooled_pearson(pred: pd.DataFrame, truth: pd.DataFrame) -> float:
    """Pearson r over all finite (sample, type) pairs."""
    return pearson(pred[truth.columns], truth)


@REGISTRY.register("ccc")
def pooled_ccc(pred: pd.DataFrame, truth: pd.DataFrame) -> float:
    """Lin's CCC over all finite (sample, type) pairs."""
    return concordance(pred[truth.columns], truth)


@REGISTRY.register("mae")
def pooled_mae(pred: pd.DataFrame, truth: pd.DataFrame) -> float:
    """Mean absolute error over all finite (sample, type) pairs."""
    p, t = _finite_pairs(pred[truth.columns], truth)
    return float(np.mean(np.abs(p - t))) if p.size else float("nan")


@REGISTRY.register("rmse")
def pooled_rmse(pred: pd.DataFrame, truth: pd.DataFrame) -> float:
    """Root mean squared error over all finite (sample, type) pairs."""
    p, t = _finite_pairs(pred[truth.columns], truth)
    return float(np.sqrt(np.mean((p - t) ** 2))) if p.size else float("nan")


#: The pooled metrics reported for every method, in table order.
POOLED = ("pearson", "ccc", "mae", "rmse")


@dataclass(frozen=True)
class TypePair:
    """A compared type: the sum of ``truth`` columns against the sum of ``pred`` columns."""

    name: str
    truth: tuple[str, ...]
    pred: tuple[str, ...]


def _names(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InputError(f"mapping entry {where} must be a name or a list of names, got {value!r}.")


def parse_mapping(spec: Mapping) -> list[TypePair]:
    """:class:`TypePair` list from a mapping (see the module docstring for the format)."""
    if not isinstance(spec, Mapping) or not spec:
        raise InputError(
            "a type mapping must be a non-empty mapping, e.g. `Tcells: [CD4 T, CD8 T]` (truth "
            "column: predicted columns) or `T: {truth: [T.cells.CD4, T.cells.CD8], pred: [T]}`."
        )
    pairs = []
    for name, value in spec.items():
        if isinstance(value, Mapping):
            unknown = set(value) - {"truth", "pred"}
            if unknown or not {"truth", "pred"} <= set(value):
                raise InputError(
                    f"mapping entry '{name}' must have exactly the keys 'truth' and 'pred', got {sorted(value)}."
                )
            truth, pred = _names(value["truth"], f"'{name}'.truth"), _names(value["pred"], f"'{name}'.pred")
            pairs.append(TypePair(str(name), truth, pred))
        else:
            pairs.append(TypePair(str(name), (str(name),), _names(value, f"'{name}'")))
    return pairs


def identity_pairs(pred_types: Sequence[str], truth_types: Sequence[str]) -> list[TypePair]:
    """One pair per type name present on both sides (no mapping given)."""
    truth_set = set(truth_types)
    return [TypePair(t, (t,), (t,)) for t in pred_types if t in truth_set]


@dataclass
class MappedTypes:
    """Truth and predictions summed into compared types, and what was left out.

    Attributes
    ----------
    truth, pred
        Samples x compared types (truth NaN where any summed column is NaN).
    skipped
        Compared types whose truth is NaN in every sample.
    pred_without_truth
        Predicted types that no compared type uses.
    truth_unused
        Truth columns that no compared type uses.
    """

    truth: pd.DataFrame
    pred: pd.DataFrame
    skipped: list[str]
    pred_without_truth: list[str]
    truth_unused: list[str]


def map_types(pred: pd.DataFrame, truth: pd.DataFrame, pairs: Sequence[TypePair]) -> MappedTypes:
    """Sum ``pred`` and ``truth`` columns into the compared types of ``pairs``.

    Raises
    ------
    InputError
        When a pair names a column that is absent, or no pair is left.
    """
    for side, frame, attr in (("truth", truth, "truth"), ("predicted", pred, "pred")):
        absent = sorted({c for p in pairs for c in getattr(p, attr)} - set(frame.columns))
        if absent:
            raise InputError(
                f"the type mapping names {side} columns {absent} that are not there; {side} "
                f"columns: {list(frame.columns)}."
            )
    mapped_truth = pd.DataFrame(
        # NaN when any summed column is NaN (a sum of measured and unmeasured is unknown).
        {p.name: truth[list(p.truth)].sum(axis=1, min_count=len(p.truth)) for p in pairs},
        index=truth.index,
    )
    mapped_pred = pd.DataFrame({p.name: pred[list(p.pred)].sum(axis=1) for p in pairs}, index=pred.index)
    skipped = [c for c in mapped_truth.columns if mapped_truth[c].isna().all()]
    used_pred = {c for p in pairs for c in p.pred}
    used_truth = {c for p in pairs for c in p.truth}
    if len(skipped) == len(pairs):
        raise InputError(
            f"no compared type has truth: {skipped or 'none mapped'} (truth columns "
            f"{list(truth.columns)}, predicted {list(pred.columns)}); pass a type mapping."
        )
    keep = [c for c in mapped_truth.columns if c not in skipped]
    return MappedTypes(
        truth=mapped_truth[keep],
        pred=mapped_pred[keep],
        skipped=skipped,
        pred_without_truth=[c for c in pred.columns if c not in used_pred],
        truth_unused=[c for c in truth.columns if c not in used_truth],
    )


def metric_tables(pred: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Per-type table (pearson, ccc, mae, n) and pooled metrics of mapped ``pred`` vs ``truth``."""
    per_type = pd.DataFrame(
        {
            "pearson": REGISTRY.get("pearson_per_type")(pred, truth),
            "ccc": REGISTRY.get("ccc_per_type")(pred, truth),
            "mae": pd.Series({c: pooled_mae(pred[[c]], truth[[c]]) for c in truth.columns}),
            "n": truth.notna().sum(),
        }
    )
    pooled = pd.Series({name: REGISTRY.get(name)(pred, truth) for name in POOLED})
    pooled["n"] = int(truth.notna().to_numpy().sum())
    return per_type, pooled
