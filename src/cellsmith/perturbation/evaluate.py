"""Score predictions and baselines with cell-eval; tables, a summary and a report.

The real cells are put into the prediction's gene order (by name) and on its scale
(log1p(CP10k) over all measured genes, from raw counts); the baselines are built from the
prediction's own control cells so that every model starts from the same controls. Beside
cell-eval's metrics every model gets the two scale-free scores of
:mod:`cellsmith.metrics.perturbation` (``pearson_top50_de``, ``energy_ratio``), and, when the
split's categories are given ("seen 2/2", "unseen single", ...), a summary per category.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from cellsmith._logging import logger
from cellsmith.data import GeneSpace
from cellsmith.data.rows import count_rows
from cellsmith.errors import InputError
from cellsmith.metrics.perturbation import REGISTRY, TOP_DE, VCC_METRICS, top_de_genes
from cellsmith.perturbation.baselines import BASELINES, Baselines
from cellsmith.perturbation.remap import GeneRemap
from cellsmith.perturbation.screen import require_obs_column
from cellsmith.report import Report
from cellsmith.report.figures import legend_outside

#: The baseline every normalised score is relative to (the challenge's cell-mean baseline).
REFERENCE = "perturbation_mean"
#: Scores that rescaling a prediction cannot game (higher r is better; a ratio near 1 is best).
SCALE_FREE: tuple[str, ...] = (f"pearson_top{TOP_DE}_de", "energy_ratio")
#: What cell-eval is given, stated in every report (cell-eval #184, #189, #197).
CELL_EVAL_INPUTS = (
    "Inputs to cell-eval: the prediction and every baseline as written in their X, the real cells converted "
    "from raw counts by cellsmith; all are log1p(CP10k) (counts normalised over every gene measured in their "
    "source, then restricted to the genes of the gene space), dense float32. cell-eval finds decimals below "
    "15 and treats them as log1p (no re-normalisation; allow_discrete=False); its DE test (pdex, "
    "is_log1p=True) runs on the same values."
)


@dataclass
class Evaluation:
    """Metrics of a prediction and its baselines.

    Attributes
    ----------
    per_perturbation
        Long table: ``model``, ``perturbation``, ``category`` (when known), one column per
        cell-eval metric and the scale-free scores.
    summary
        One row per model: the mean of each metric and ``normalized_score`` (cell-eval's
        baseline-normalised score against ``perturbation_mean``; NaN without baselines).
    by_category
        Mean of each metric per (category, model) and the normalised score of the category's
        perturbations alone; empty without categories.
    real_shift, predicted_shift
        Mean shifts (perturbation - control), perturbations x genes; predicted per model.
    """

    per_perturbation: pd.DataFrame
    summary: pd.DataFrame
    real_shift: pd.DataFrame
    predicted_shift: dict[str, pd.DataFrame] = field(default_factory=dict)
    by_category: pd.DataFrame = field(default_factory=pd.DataFrame)


def _mean_shift(adata: ad.AnnData, key: str, control_label: str, targets: list[str]) -> pd.DataFrame:
    labels = adata.obs[key].astype(str).to_numpy()
    x = adata.X

    def mean(label: str) -> np.ndarray:
        return np.asarray(x[labels == label].mean(axis=0)).ravel()

    control = mean(control_label)
    return pd.DataFrame([mean(t) - control for t in targets], index=targets, columns=adata.var_names)


def real_in_prediction_space(
    real: ad.AnnData, pred: ad.AnnData, *, perturbation_key: str, control_label: str, counts_layer: str | None = None
) -> ad.AnnData:
    """Real raw-count cells (X or ``counts_layer``) of the predicted perturbations, as CSR
    log1p(CP10k) in ``pred``'s genes (read and converted block by block, never densified)."""
    require_obs_column(real, perturbation_key, "perturbation")
    predicted = set(pred.obs[perturbation_key].astype(str))
    labels = real.obs[perturbation_key].astype(str).to_numpy()
    absent = sorted(predicted - set(labels))
    if absent:
        raise InputError(
            f"the real data have no cells of {', '.join(absent[:8])}, which the prediction holds; "
            "evaluate against a file with those perturbations (e.g. heldout_real.h5ad of the model)."
        )
    keep = np.isin(labels, list(predicted))
    space = GeneSpace(pred.var_names)
    remap = GeneRemap(space, list(real.var_names), name="real data")
    if remap.n_mapped < len(space):
        raise InputError(
            f"the real data lack {len(space) - remap.n_mapped} of the {len(space)} predicted genes; "
            "evaluate against the screen the model was fine-tuned on."
        )
    return ad.AnnData(
        X=remap.transform(count_rows(real, layer=counts_layer), rows=keep),
        obs=real.obs.iloc[np.flatnonzero(keep)][[perturbation_key]].copy(),
        var=pd.DataFrame(index=pred.var_names.copy()),
    )


def baseline_predictions(
    pred: ad.AnnData, baselines: Baselines, *, perturbation_key: str, control_label: str, seed: int = 0
) -> dict[str, ad.AnnData]:
    """Each baseline's prediction with the same targets, cell numbers and control cells as ``pred``."""
    if list(baselines.genespace.names) != list(pred.var_names):
        raise InputError(
            f"the baselines were fitted in gene space {baselines.genespace.digest}, the prediction has "
            f"other genes (digest {GeneSpace(pred.var_names).digest}); use the model that made it."
        )
    labels = pred.obs[perturbation_key].astype(str).to_numpy()
    x = np.asarray(pred.X.toarray() if sp.issparse(pred.X) else pred.X)
    controls = x[labels == control_label]
    out = {}
    for name in BASELINES:
        rng = np.random.default_rng(seed)
        predict = baselines.predictor(name)
        values = x.copy()
        for target in sorted(set(labels) - {control_label}):
            at = np.flatnonzero(labels == target)
            values[at] = predict(controls[rng.choice(len(controls), at.size)], target)
        out[name] = ad.AnnData(
            X=values.astype(np.float32), obs=pred.obs[[perturbation_key]].copy(), var=pred.var.copy()
        )
    return out


def _rows(adata: ad.AnnData, key: str, label: str, columns: np.ndarray) -> np.ndarray:
    x = adata.X[np.flatnonzero(adata.obs[key].astype(str).to_numpy() == label)][:, columns]
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def scale_free_scores(
    predictions: Mapping[str, ad.AnnData],
    real: ad.AnnData,
    real_shift: pd.DataFrame,
    predicted_shift: Mapping[str, pd.DataFrame],
    real_de: pd.DataFrame | None,
    *,
    perturbation_key: str,
    seed: int = 0,
) -> pd.DataFrame:
    """``model``, ``perturbation`` and the :data:`SCALE_FREE` scores, both on each perturbation's
    top DE genes (cell-eval's real DE table; by |real mean shift| without one)."""
    rows = []
    for target in real_shift.index:
        table = None if real_de is None else real_de[real_de["target"].astype(str) == target]
        genes = top_de_genes(table, real_shift.loc[target])
        columns = real.var_names.get_indexer(genes)
        truth = _rows(real, perturbation_key, target, columns)
        for name, pred in predictions.items():
            rows.append(
                {
                    "model": name,
                    "perturbation": target,
                    SCALE_FREE[0]: REGISTRY.get("top_de_pearson")(
                        predicted_shift[name].loc[target], real_shift.loc[target], genes
                    ),
                    SCALE_FREE[1]: REGISTRY.get("energy_ratio")(
                        _rows(pred, perturbation_key, target, columns), truth, seed=seed
                    ),
                }
            )
    return pd.DataFrame(rows)


def _aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """cell-eval's aggregate (``describe()`` of the per-perturbation metrics) of some rows."""
    import polars as pl

    return pl.from_pandas(table[[m for m in VCC_METRICS if m in table]].reset_index(drop=True)).describe().to_pandas()


def _by_category(per_perturbation: pd.DataFrame) -> pd.DataFrame:
    """Mean metrics per (category, model), with the normalised score of each category's rows."""
    groups = per_perturbation.drop(columns="perturbation").groupby(["category", "model"], sort=False)
    table = groups.mean()
    table.insert(0, "n_perturbations", groups.size())
    table["normalized_score"] = np.nan
    score = REGISTRY.get("normalized_score")
    for category, rows in per_perturbation.groupby("category", sort=False):
        reference = rows[rows["model"] == REFERENCE]
        if reference.empty:
            continue
        for model, own in rows.groupby("model", sort=False):
            table.loc[(category, model), "normalized_score"] = score(_aggregate(own), _aggregate(reference))[
                "avg_score"
            ]
    return table


def evaluate(
    predictions: Mapping[str, ad.AnnData],
    real: ad.AnnData,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    num_threads: int = 1,
    categories: Mapping[str, str] | None = None,
    seed: int = 0,
) -> Evaluation:
    """Run cell-eval on every prediction (``{name: AnnData}``, e.g. ``{"model": pred, **baselines}``)
    against ``real`` (log1p(CP10k), same genes) and add the scale-free scores; normalised scores
    are relative to ``perturbation_mean`` when it is one of the predictions. ``categories``
    (perturbation -> setting, e.g. from :class:`~cellsmith.perturbation.Split`) adds
    :attr:`Evaluation.by_category`."""
    if not predictions:
        raise InputError("nothing to evaluate: no prediction given.")
    tables, aggregates, real_de, de_table = [], {}, None, None
    with tempfile.TemporaryDirectory(prefix="cell_eval_") as scratch:
        for name, pred in tqdm(predictions.items(), desc="cell-eval", leave=False):
            logger.info("cell-eval: scoring %s", name)
            result = REGISTRY.get("cell_eval")(
                pred, real, perturbation_key=perturbation_key, control_label=control_label, real_de=real_de,
                work_dir=Path(scratch) / name, num_threads=num_threads,
            )
            real_de = result.real_de
            tables.append(result.per_perturbation.assign(model=name))
            aggregates[name] = result.aggregate
        if real_de is not None:
            de_table = pd.read_csv(real_de)
    per_perturbation = pd.concat(tables).reset_index().rename(columns={"index": "perturbation"})
    per_perturbation = per_perturbation[["model", "perturbation", *[m for m in VCC_METRICS if m in per_perturbation]]]
    targets = sorted(set(per_perturbation["perturbation"]))
    real_shift = _mean_shift(real, perturbation_key, control_label, targets)
    predicted_shift = {n: _mean_shift(p, perturbation_key, control_label, targets) for n, p in predictions.items()}
    scores = scale_free_scores(
        predictions, real, real_shift, predicted_shift, de_table, perturbation_key=perturbation_key, seed=seed
    )
    per_perturbation = per_perturbation.merge(scores, on=["model", "perturbation"], how="left")
    summary = per_perturbation.drop(columns="perturbation").groupby("model", sort=False).mean()
    summary["normalized_score"] = np.nan
    if REFERENCE in aggregates:
        score = REGISTRY.get("normalized_score")
        for name, agg in aggregates.items():
            summary.loc[name, "normalized_score"] = score(agg, aggregates[REFERENCE])["avg_score"]
    by_category = pd.DataFrame()
    if categories:
        per_perturbation.insert(2, "category", per_perturbation["perturbation"].map(dict(categories)).fillna("seen"))
        by_category = _by_category(per_perturbation)
    return Evaluation(
        per_perturbation=per_perturbation,
        summary=summary,
        real_shift=real_shift,
        predicted_shift=predicted_shift,
        by_category=by_category,
    )


#: Panels of :func:`shift_figure` by the number of perturbations: position in the ranking.
_SHIFT_PANELS = {1: {"only": 0}, 2: {"best": 0, "worst": 1}}


def shift_figure(evaluation: Evaluation, model: str = "model"):
    """Predicted vs real mean shift of the best, median and worst perturbation of ``model``
    (ranked by the correlation of the shifts); one panel per perturbation when fewer than 3
    are held out."""
    import matplotlib.pyplot as plt

    corr = REGISTRY.get("mean_shift_pearson")
    predicted = evaluation.predicted_shift[model]
    ranking = (
        pd.Series(
            {t: corr(predicted.loc[t].to_numpy(), evaluation.real_shift.loc[t].to_numpy()) for t in predicted.index}
        )
        .fillna(-1.0)
        .sort_values(ascending=False)
    )
    n = len(ranking)
    positions = _SHIFT_PANELS.get(n, {"best": 0, "median": n // 2, "worst": n - 1})
    picks = {which: ranking.index[i] for which, i in positions.items()}
    fig, axes = plt.subplots(1, len(picks), figsize=(4 * len(picks), 3.8), squeeze=False)
    axes = axes[0]
    reference = evaluation.predicted_shift.get(REFERENCE)
    for ax, (which, target) in zip(axes, picks.items(), strict=True):
        real = evaluation.real_shift.loc[target].to_numpy()
        if reference is not None:
            ax.scatter(real, reference.loc[target].to_numpy(), s=6, c="#bbb", label=REFERENCE)
        ax.scatter(real, predicted.loc[target].to_numpy(), s=8, c="#c33", label=model)
        lim = np.abs(np.concatenate([real, predicted.loc[target].to_numpy()])).max() * 1.05 + 1e-6
        ax.plot([-lim, lim], [-lim, lim], lw=0.8, c="#333")
        ax.set_title(f"{which}: {target} (r = {ranking[target]:.2f})")
        ax.set_xlabel("real mean shift (log1p CP10k)")
    axes[0].set_ylabel("predicted mean shift")
    legend_outside(axes[-1])
    fig.tight_layout()
    return fig


def write_evaluation(evaluation: Evaluation, out_dir: Path, *, title: str, notes: list[str] = ()) -> Report:
    """Write ``per_perturbation.csv``, ``summary.csv``, ``mean_shift.png`` and ``report.html``."""
    evaluation.per_perturbation.to_csv(out_dir / "per_perturbation.csv", index=False)
    evaluation.summary.to_csv(out_dir / "summary.csv")
    report = Report(title)
    for note in notes:
        report.text(note)
    report.text(
        "cell-eval (Virtual Cell Challenge metrics): mae of pseudobulks (lower is better), "
        "discrimination_score_l1 and overlap_at_N (higher is better); normalized_score is cell-eval's "
        f"baseline-normalised score against {REFERENCE} (0 = no better than that baseline). "
        f"Scale-free scores on the top {TOP_DE} DE genes of each perturbation (cell-eval's real DE table): "
        f"{SCALE_FREE[0]}, Pearson r of predicted vs real mean shift (higher is better); {SCALE_FREE[1]}, energy "
        "distance of predicted to real cells over that of two halves of the real cells (1 = as close as a "
        "second sample of the truth; lower is better)."
    )
    report.text(CELL_EVAL_INPUTS)
    report.heading("Scores side by side", 3)
    report.table(evaluation.summary)
    if not evaluation.by_category.empty:
        evaluation.by_category.to_csv(out_dir / "summary_by_category.csv")
        report.heading("By split category", 3)
        report.table(evaluation.by_category.reset_index().set_index("category"))
    report.heading("Per perturbation", 3)
    for metric in (*VCC_METRICS, *SCALE_FREE):
        if metric in evaluation.per_perturbation:
            wide = evaluation.per_perturbation.pivot(index="perturbation", columns="model", values=metric)
            report.text(metric)
            report.table(wide[list(evaluation.summary.index)])
    if "model" in evaluation.predicted_shift:
        report.figure(
            shift_figure(evaluation),
            caption="Predicted vs real mean shift per gene for the best, median and worst perturbation "
            f"of the model (grey: {REFERENCE} baseline).",
            save_png=out_dir / "mean_shift.png",
        )
    report.write(out_dir / "report.html")
    return report
