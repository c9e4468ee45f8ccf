"""``deconvolve run``: from a labelled reference and a bulk set to proportions in one step.

Trains HP-VADE on the genes reference and bulk share (so no gene-overlap refusal), predicts
the bulk with platform adaptation (and without, the reference row), beside NNLS, estimates
the ``unknown`` fraction, and writes the outputs folder atomically:

- ``proportions.csv``: one row per sample, one column per cell type plus ``unknown``;
- ``proportions.nnls.csv``: the NNLS baseline, same columns;
- ``proportions.no-adapt.csv``: the reference row, HP-VADE as cellsmith 0.1 ran it: no
  adaptation, each type weighted by its reference counts per cell (written when it differs);
- ``fit.csv``: per-sample fit quality, unknown fractions, their flag and the anchors' noise;
- ``platform.csv``: the estimated gene-wise platform factors (when adaptation ran);
- ``report.html``: all of it as tables and figures; ``model/``: the trained model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellsmith.data.audit import describe_source
from cellsmith.deconvolution.bulk_input import require_expressed_samples, require_linear_bulk
from cellsmith.deconvolution.config import DeconvolutionConfig
from cellsmith.deconvolution.content import REFERENCE
from cellsmith.deconvolution.evaluate import NNLS_SUFFIX, NO_ADAPT_SUFFIX, RUN_FIT, sibling
from cellsmith.deconvolution.model import Deconvolver, Prediction
from cellsmith.deconvolution.reference import genes_to_train_on
from cellsmith.deconvolution.unknown import ANCHOR_SE, SET_FLOOR, UNKNOWN, UNKNOWN_FLAG
from cellsmith.report import Report, atomic_output_dir

PROPORTIONS = "proportions.csv"
NNLS_FILE, NO_ADAPT_FILE = sibling(PROPORTIONS, NNLS_SUFFIX).name, sibling(PROPORTIONS, NO_ADAPT_SUFFIX).name
PLATFORM_FILE, REPORT_FILE, MODEL_DIR = "platform.csv", "report.html", "model"


@dataclass
class RunResult:
    """What ``deconvolve run`` computed.

    Attributes
    ----------
    model
        HP-VADE trained on the shared genes.
    prediction
        With adaptation (or without, when it was turned off).
    no_adapt
        The reference row: without adaptation and without mRNA re-weighting; None when
        ``prediction`` already is that.
    shared_genes
        Genes reference and bulk have in common (training was restricted to them).
    """

    model: Deconvolver
    prediction: Prediction
    no_adapt: Prediction | None
    shared_genes: int

    def tables(self) -> dict[str, pd.DataFrame]:
        """Output file name -> table (proportions with ``unknown``, NNLS, no-adapt, fit, platform)."""
        tables = {
            PROPORTIONS: self.prediction.with_unknown("hpvade"),
            NNLS_FILE: self.prediction.with_unknown("nnls"),
            RUN_FIT: self.prediction.fit,
        }
        if self.no_adapt is not None:
            tables[NO_ADAPT_FILE] = self.no_adapt.with_unknown("hpvade")
        if self.prediction.platform is not None:
            tables[PLATFORM_FILE] = self.prediction.platform.to_frame()
        return tables


def run(
    reference: ad.AnnData,
    bulk: ad.AnnData,
    *,
    cell_type_key: str,
    config: DeconvolutionConfig | None = None,
    counts_layer: str | None = None,
    adapt: bool = True,
) -> RunResult:
    """Train on the genes ``reference`` and ``bulk`` share; predict ``bulk`` (see the module doc).

    Raises
    ------
    GeneSpaceError
        Too few shared genes (before or after marker selection) to train on
        (:func:`~cellsmith.deconvolution.reference.genes_to_train_on`).
    InputError
        Bulk samples without expression in the shared genes.
    ScaleError
        As :meth:`Deconvolver.train` and :meth:`Deconvolver.predict` (log bulk is refused).
    """
    # Refuse what prediction would refuse before minutes of training, not after.
    values, _ = require_linear_bulk(bulk)
    shared = reference.var_names[genes_to_train_on(reference.var_names, bulk.var_names, describe_source(reference))]
    in_shared = values[:, bulk.var_names.get_indexer(shared)]
    require_expressed_samples(in_shared, bulk, "the genes it shares with the reference")
    model = Deconvolver(config).train(
        reference, cell_type_key=cell_type_key, counts_layer=counts_layer, genes=list(shared)
    )
    prediction = model.predict(bulk.copy(), adapt=adapt)
    # The 0.1 model as the reference row, unless the prediction already is it.
    differs = adapt or prediction.mrna_content is not None
    no_adapt = model.predict(bulk.copy(), mrna_content=REFERENCE) if differs else None
    return RunResult(model, prediction, no_adapt, len(shared))


def write_run(result: RunResult, out_dir: str | Path, *, bulk_name: str = "bulk") -> Path:
    """Write every output of ``result`` into ``out_dir`` at once (nothing on error)."""
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir) as tmp:
        for name, table in result.tables().items():
            table.to_csv(tmp / name, index_label="sample" if name != PLATFORM_FILE else "gene")
        result.model.save(tmp / MODEL_DIR)
        run_report(result, bulk_name=bulk_name).write(tmp / REPORT_FILE)
    return out_dir


def _method_frames(result: RunResult) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Each method's proportions (with unknown), and their mean per type: the level each assigns."""
    rows = {"HP-VADE" + (" (adapted)" if result.no_adapt is not None else ""): result.prediction.with_unknown("hpvade")}
    if result.no_adapt is not None:
        rows["HP-VADE --no-adapt"] = result.no_adapt.with_unknown("hpvade")
    rows["NNLS"] = result.prediction.with_unknown("nnls")
    return pd.DataFrame({name: frame.mean() for name, frame in rows.items()}).T, rows


def proportions_figure(frames: dict[str, pd.DataFrame]):
    """Stacked bars of each sample's proportions, one panel per method."""
    import matplotlib.pyplot as plt

    n_samples = len(next(iter(frames.values())))
    fig, axes = plt.subplots(
        1, len(frames), figsize=(min(4 + 0.25 * n_samples, 12) * len(frames) / 2, 3.4), squeeze=False, sharey=True
    )
    for ax, (name, frame) in zip(axes[0], frames.items(), strict=True):
        bottom = np.zeros(len(frame))
        for column in frame.columns:
            color = "#bbbbbb" if column == UNKNOWN else None
            ax.bar(np.arange(len(frame)), frame[column], bottom=bottom, label=column, color=color)
            bottom += frame[column].to_numpy()
        ax.set_title(name)
        ax.set_xticks(np.arange(len(frame)))
        ax.set_xticklabels(frame.index, rotation=90, fontsize=6)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("proportion of cells")
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def run_report(result: RunResult, *, bulk_name: str = "bulk") -> Report:
    """The page of ``deconvolve run``: proportions of every method, fit, platform, training."""
    model, prediction = result.model, result.prediction
    report = Report(f"Deconvolution of {bulk_name}")
    report.text(
        f"{len(prediction.proportions)} samples; HP-VADE trained on the {result.shared_genes:,} genes reference "
        f"and bulk share ({len(model.genespace):,} marker genes); cell types: {', '.join(model.cell_types)}."
    )
    means, frames = _method_frames(result)
    report.heading("Mean proportion per method")
    report.text(
        "unknown: share of the bulk the reference's cell types do not explain (cells absent from the "
        f"reference, e.g. neutrophils in whole blood, tumour cells); samples above {UNKNOWN_FLAG:g} are "
        "flagged in fit.csv. NNLS is the plain baseline; --no-adapt is HP-VADE as cellsmith 0.1 ran it (no platform "
        "adaptation, types weighted by their reference counts per cell).",
        css_class="note",
    )
    report.table(means)
    if ANCHOR_SE in prediction.fit:  # the model has anchors
        se = float(np.nanmedian(prediction.fit[ANCHOR_SE]))
        floor = float(prediction.fit[SET_FLOOR].iloc[0])
        lowered = (
            f"came out below 0, so the whole set was lowered by {floor:.2f} in log"
            if floor > 0
            else "did not come out below 0, so the set was not lowered"
        )
        report.text(
            f"The unknown's level rests on {len(model.anchors.genes)} anchor genes (expressed evenly in every "
            f"reference type). Each carries a platform factor of its own: from their spread, these may move the "
            f"level by about ±{se:.2f} in log, or ±{1 - np.exp(-se):.2f} of the reads (median over samples; "
            f"{ANCHOR_SE} in fit.csv). That is a floor on its uncertainty; the unknown ranks samples more "
            "reliably than it sets their level. The samples share that offset and none can hold a negative "
            f"unknown; the unknown of the set's upper decile {lowered} ({SET_FLOOR} in fit.csv).",
            css_class="note",
        )
    report.figure(proportions_figure(frames), caption="Proportions per sample (grey: unknown).")
    if prediction.mrna_content is not None:
        report.heading("mRNA per cell")
        report.text(
            "HP-VADE learns cell fractions from pseudo-bulks, where each type weighs its counts per cell in the "
            "single-cell reference; in the bulk it weighs its mRNA per cell. Its fractions were re-weighted by "
            "reference / bulk (columns relative to the types' mean; --mrna-content reference turns this off). "
            "Row unknown: the mRNA per cell of the cells the reference lacks (--unknown-mrna), which turns the "
            "unknown share of reads into a share of cells. NNLS is not re-weighted: its fractions and unknown_nnls "
            "stay shares of reads.",
            css_class="note",
        )
        report.table(prediction.mrna_content.round(3))
    report.heading("Fit per sample")
    report.table(prediction.fit)
    if prediction.platform is not None:
        factors = prediction.platform
        report.heading("Platform adaptation")
        report.text(
            f"The bulk's CPM was raised to the power {prediction.range_exponent:.2f} to restore its dynamic "
            "range against the reference (above 1: the bulk's range was narrower). "
            f"Gene-wise platform factors (bulk over reference, natural log) estimated from these samples: "
            f"SD {factors.std():.2f}; largest: "
            + ", ".join(f"{g} {factors[g]:+.2f}" for g in factors.abs().sort_values(ascending=False).index[:8])
            + "."
        )
    report.extend(model.training_report())  # under its own heading, "HP-VADE training"
    return report

