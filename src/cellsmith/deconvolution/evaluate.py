"""Compare predicted proportions with truth and build the deconvolution report.

Files: predictions are ``PROPS.csv`` (HP-VADE) with the NNLS baseline in the sibling
``PROPS.nnls.csv`` and the per-sample fit quality in ``PROPS.fit.csv``; truth is a CSV (samples
x types) or an ``.h5ad`` whose ``obsm[key]`` holds the fractions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cellsmith.data.io import read_h5ad, read_table, read_yaml
from cellsmith.errors import InputError
from cellsmith.metrics.deconvolution import (
    MappedTypes,
    TypePair,
    identity_pairs,
    map_types,
    metric_tables,
    parse_mapping,
)
from cellsmith.report import Report
from cellsmith.report.figures import legend_below, legend_outside, r_text

#: Sibling files of a predictions CSV (``.no-adapt.csv``: HP-VADE without platform adaptation).
NNLS_SUFFIX, FIT_SUFFIX, NO_ADAPT_SUFFIX = ".nnls.csv", ".fit.csv", ".no-adapt.csv"
#: The fit table in a ``deconvolve run`` folder (beside ``proportions.csv``).
RUN_FIT = "fit.csv"


def sibling(path: str | Path, suffix: str) -> Path:
    """``PROPS.csv`` -> ``PROPS.nnls.csv`` (or another suffix)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".csv") + suffix)


@dataclass
class Comparison:
    """Metrics of each method against the truth, on the compared types.

    Attributes
    ----------
    per_type
        Rows (method, compared type); columns pearson, ccc, mae, n.
    pooled
        Rows method; columns pearson, ccc, mae, rmse, n.
    truth
        Samples x compared types (finite or NaN).
    preds
        Method -> samples x compared types.
    notes
        What was skipped or unused, in words.
    """

    per_type: pd.DataFrame
    pooled: pd.DataFrame
    truth: pd.DataFrame
    preds: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)


def _common_samples(preds: Mapping[str, pd.DataFrame], truth: pd.DataFrame) -> pd.Index:
    index = truth.index.astype(str)
    for pred in preds.values():
        index = index.intersection(pred.index.astype(str), sort=False)
    if index.empty:
        first = next(iter(preds.values()))
        raise InputError(
            f"predictions and truth share no sample names (predicted e.g. {list(first.index[:3])}, "
            f"truth e.g. {list(truth.index[:3])}); the first column of both must hold sample names."
        )
    return index


def compare(
    preds: Mapping[str, pd.DataFrame],
    truth: pd.DataFrame,
    *,
    mapping: Sequence[TypePair] | Mapping | None = None,
) -> Comparison:
    """Per-type and pooled metrics of every method in ``preds`` against ``truth``.

    Parameters
    ----------
    preds
        Method name -> samples x predicted types.
    truth
        Samples x true types (NaN: not measured).
    mapping
        Type pairs or a mapping in the format of :mod:`cellsmith.metrics.deconvolution`;
        default: the type names present on both sides.
    """
    truth = truth.copy()
    truth.index = truth.index.astype(str)
    preds = {name: p.set_axis(p.index.astype(str), axis=0) for name, p in preds.items()}
    samples = _common_samples(preds, truth)
    first = next(iter(preds.values()))
    if mapping is None:
        pairs = identity_pairs(list(first.columns), list(truth.columns))
        if not pairs:
            raise InputError(
                f"predicted types {list(first.columns)} and truth columns {list(truth.columns)} share "
                "no names; pass a type mapping (--map MAP.yaml or --pair 'TRUTH=PRED,PRED')."
            )
    else:
        pairs = mapping if not isinstance(mapping, Mapping) else parse_mapping(mapping)
    rows, pooled, mapped_preds = [], {}, {}
    mapped: MappedTypes | None = None
    for method, pred in preds.items():
        mapped = map_types(pred.loc[samples], truth.loc[samples], pairs)
        per_type, pooled[method] = metric_tables(mapped.pred, mapped.truth)
        rows.append(per_type.assign(method=method).rename_axis("type").reset_index())
        mapped_preds[method] = mapped.pred
    notes = [
        f"{samples.size} samples compared on {len(mapped.truth.columns)} types: {', '.join(mapped.truth.columns)}."
    ]
    if mapped.skipped:
        notes.append(f"skipped (truth NaN in every sample): {', '.join(mapped.skipped)}.")
    if mapped.pred_without_truth:
        notes.append(f"predicted types without truth: {', '.join(mapped.pred_without_truth)}.")
    if mapped.truth_unused:
        notes.append(f"truth columns not compared: {', '.join(mapped.truth_unused)}.")
    per_type = pd.concat(rows).set_index(["method", "type"])
    return Comparison(per_type, pd.DataFrame(pooled).T.rename_axis("method"), mapped.truth, mapped_preds, notes)


def read_mapping(path: str | Path | None = None, pairs: Sequence[str] = ()) -> list[TypePair] | None:
    """Type pairs from a YAML file and/or ``TRUTH[,TRUTH]=PRED[,PRED]`` strings; None if neither."""
    result: list[TypePair] = []
    if path is not None:
        result += parse_mapping(read_yaml(path, "mapping file"))
    for text in pairs:
        if "=" not in text:
            raise InputError(f"--pair takes TRUTH[,TRUTH...]=PRED[,PRED...], got '{text}'.")
        left, right = (tuple(s.strip() for s in side.split(",") if s.strip()) for side in text.split("=", 1))
        if not left or not right:
            raise InputError(f"--pair '{text}' needs names on both sides of '='.")
        result.append(TypePair(" + ".join(left), left, right))
    return result or None


def read_truth(path: str | Path, key: str | None = None) -> pd.DataFrame:
    """Samples x types truth from a CSV (first column: sample names) or ``h5ad.obsm[key]``."""
    path = Path(path)
    if path.suffix == ".h5ad":
        adata = read_h5ad(path, what="truth file")
        if key is None or key not in adata.obsm:
            raise InputError(
                f"pass --truth-key, one of the obsm keys of {path}: {list(adata.obsm)}"
                + ("" if key is None else f" ('{key}' is not one of them).")
            )
        value = adata.obsm[key]
        frame = value if isinstance(value, pd.DataFrame) else pd.DataFrame(np.asarray(value), index=adata.obs_names)
        return frame.set_axis(adata.obs_names, axis=0).astype(float)
    return _read_table(path, "truth")


def _read_table(path: Path, what: str) -> pd.DataFrame:
    return read_table(path, f"{what} file").astype(float)


def read_predictions(path: str | Path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame | None]:
    """HP-VADE proportions from ``path``; HP-VADE without adaptation and NNLS from its
    ``.no-adapt.csv`` and ``.nnls.csv`` siblings, and the fit table from ``.fit.csv`` (or the
    folder's ``fit.csv``, as ``deconvolve run`` writes it), when present."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"predictions file {path} does not exist; write it with `cellsmith deconvolve predict`.")
    preds = {"HP-VADE": _read_table(path, "predictions")}
    if sibling(path, NO_ADAPT_SUFFIX).is_file():
        preds["HP-VADE --no-adapt"] = _read_table(sibling(path, NO_ADAPT_SUFFIX), "no-adapt predictions")
    if sibling(path, NNLS_SUFFIX).is_file():
        preds["NNLS"] = _read_table(sibling(path, NNLS_SUFFIX), "NNLS predictions")
    fit_path = next((p for p in (sibling(path, FIT_SUFFIX), path.parent / RUN_FIT) if p.is_file()), None)
    return preds, _read_table(fit_path, "fit") if fit_path is not None else None


# --------------------------------------------------------------------------- report
def scatter_figure(comparison: Comparison):
    """Predicted vs true proportion, one panel per compared type, one colour per method."""
    import matplotlib.pyplot as plt

    types = list(comparison.truth.columns)
    n_cols = min(len(types), 4)
    n_rows = int(np.ceil(len(types) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 3.1 * n_rows), squeeze=False)
    for ax, cell_type in zip(axes.ravel(), types, strict=False):
        truth = comparison.truth[cell_type]
        top = max(
            float(np.nanmax(truth.to_numpy())), *(float(p[cell_type].max()) for p in comparison.preds.values()), 0.05
        )
        ax.plot([0, top], [0, top], color="#999", lw=0.8, ls="--")
        r = []
        for method, pred in comparison.preds.items():
            r.append(f"{method} {r_text(comparison.per_type.loc[(method, cell_type), 'pearson'])}")
            ax.scatter(truth, pred[cell_type], s=8, alpha=0.6, label=method)
        ax.set_title(f"{cell_type}\nr: {', '.join(r)}", fontsize=9)
        ax.set_xlabel("true proportion")
        ax.set_ylabel("predicted")
    for ax in axes.ravel()[len(types) :]:
        ax.axis("off")
    fig.tight_layout()
    legend_below(fig, axes[0, 0])  # one legend for all panels, off the data
    return fig


def history_figure(history: pd.DataFrame):
    """Training and validation total loss per epoch, and each validation loss term."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for column in ("train_loss", "val_loss"):
        if column in history:
            rows = history[["epoch", column]].dropna()
            left.plot(rows["epoch"], rows[column], marker=".", label=column)
    left.set_xlabel("epoch")
    left.set_ylabel("total loss")
    left.set_yscale("log")
    legend_outside(left)
    for column in [c for c in history.columns if c.startswith("val_") and c != "val_loss"]:
        rows = history[["epoch", column]].dropna()
        right.plot(rows["epoch"], rows[column], label=column.removeprefix("val_"))
    right.set_xlabel("epoch")
    right.set_ylabel("validation term (unweighted)")
    right.set_yscale("log")
    legend_outside(right)
    fig.tight_layout()
    return fig


def diagnostics_table(diagnostics: dict) -> pd.DataFrame:
    """First-batch ranges and weighted loss terms as one table."""
    rows = [{"quantity": name, **stats} for name, stats in diagnostics["ranges"].items()]
    rows += [
        {"quantity": f"loss: {name} (weighted)", "mean": value} for name, value in diagnostics["weighted_loss"].items()
    ]
    return pd.DataFrame(rows).set_index("quantity")


def training_report(report: Report, training: dict, history: pd.DataFrame | None) -> None:
    """Append training curves, validation metrics and first-batch diagnostics to ``report``."""
    if history is not None and not history.empty:
        report.figure(history_figure(history), caption="Training curves (best checkpoint kept by validation loss).")
    if training.get("validation"):
        report.text("Validation pseudo-bulks (cells never seen in training), pooled metrics:")
        report.table(pd.DataFrame(training["validation"]).T)
    diagnostics = training.get("diagnostics")
    if diagnostics:
        report.text("First-batch diagnostics: ranges of every scale and the weighted loss terms.")
        report.table(diagnostics_table(diagnostics))
        if diagnostics.get("dominant_term"):
            report.text(
                f"warning: loss term {diagnostics['dominant_term']} dominates the others by > 1,000x.", css_class="warn"
            )


def evaluation_report(
    comparison: Comparison,
    *,
    title: str = "Deconvolution: HP-VADE vs NNLS",
    fit: pd.DataFrame | None = None,
    training: dict | None = None,
    history: pd.DataFrame | None = None,
    save_png_dir: Path | None = None,
) -> Report:
    """The evaluation page: metric tables, scatter plots, fit quality and training."""
    report = Report(title)
    for note in comparison.notes:
        report.text(note, css_class="note")
    report.heading("Pooled metrics (all sample x type pairs)")
    report.table(comparison.pooled)
    report.heading("Per cell type")
    report.table(comparison.per_type)
    undefined = (
        " r n/a: fewer than 3 samples, too few for a correlation."
        if comparison.per_type["pearson"].isna().any()
        else ""
    )
    report.figure(
        scatter_figure(comparison),
        caption=f"Predicted vs true proportions; dashed: identity; r: Pearson r per method.{undefined}",
        save_png=None if save_png_dir is None else save_png_dir / "scatter.png",
    )
    if fit is not None:
        report.heading("How well S p explains each bulk (R^2 in log1p(CPM/100) space)")
        report.text(
            "Low R^2 means the bulk holds expression the reference signature cannot produce, "
            "e.g. a cell type absent from the reference.",
            css_class="note",
        )
        report.table(fit, max_rows=10)
    if training:
        report.heading("Training")
        training_report(report, training, history)
    return report
