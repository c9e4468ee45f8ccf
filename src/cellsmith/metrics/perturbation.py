"""Perturbation-response metrics: the Virtual Cell Challenge evaluator (cell-eval).

``cell_eval``: per-perturbation MAE of pseudobulks, differential-expression overlap
(``overlap_at_N``) and perturbation discrimination (``discrimination_score_l1``), and their
aggregate; ``normalized_score``: cell-eval's baseline-normalised score of one model against a
baseline (per metric ``1 - user/base`` for errors, ``(user - base) / (1 - base)`` for scores,
clipped at 0, then averaged into ``avg_score``).

Two scores that rescaling a prediction cannot game: ``top_de_pearson`` (Pearson r of predicted
vs real mean shift on the top DE genes of a perturbation: invariant to any positive scaling of
the shift, so neither shrinking nor inflating it helps) and ``energy_ratio`` (energy distance
of predicted to real cells relative to that between two halves of the real cells: 1 is as
close as a second sample of the truth).

Inputs are cell-eval's format: obs ``target_gene`` (controls labelled ``non-targeting``), the
same genes in the same order in prediction and truth, log1p(CP10k) values.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from cellsmith.errors import InputError
from cellsmith.metrics import correlation
from cellsmith.metrics.registry import MetricRegistry

REGISTRY = MetricRegistry("perturbation")
#: The metrics of the challenge's score (cell-eval profile "vcc").
VCC_METRICS: tuple[str, ...] = ("mae", "discrimination_score_l1", "overlap_at_N")


@dataclass
class CellEvalResult:
    """cell-eval output of one prediction.

    Attributes
    ----------
    per_perturbation
        One row per perturbation, one column per metric.
    aggregate
        ``pl.DataFrame.describe()`` of the table (column ``statistic``), as cell-eval writes it.
    real_de
        Path of the differential-expression table of the real data, to reuse for another
        prediction of the same truth.
    """

    per_perturbation: pd.DataFrame
    aggregate: pd.DataFrame
    real_de: Path | None


def _check_pair(pred: ad.AnnData, real: ad.AnnData, key: str, control_label: str) -> None:
    for name, adata in (("prediction", pred), ("real data", real)):
        if key not in adata.obs:
            raise InputError(f"the {name} has no obs column '{key}' (columns: {list(adata.obs.columns)}).")
        if control_label not in set(adata.obs[key].astype(str)):
            raise InputError(f"the {name} has no control cells ('{control_label}' in obs '{key}').")
    if list(pred.var_names) != list(real.var_names):
        raise InputError("prediction and real data must have the same genes in the same order.")
    perts_pred = set(pred.obs[key].astype(str))
    perts_real = set(real.obs[key].astype(str))
    if perts_pred != perts_real:
        raise InputError(
            f"prediction and real data must hold the same perturbations; only predicted: "
            f"{sorted(perts_pred - perts_real)[:5]}, only real: {sorted(perts_real - perts_pred)[:5]}."
        )


def _plain_labels(adata: ad.AnnData, key: str) -> ad.AnnData:
    """A copy with only the label column, as categories actually present (cell-eval's DE test
    fails on an empty category)."""
    out = ad.AnnData(X=adata.X.copy(), var=adata.var[[]].copy())
    out.obs_names = adata.obs_names
    out.obs[key] = pd.Categorical(adata.obs[key].astype(str).to_numpy())
    return out


@REGISTRY.register("cell_eval")
def cell_eval(
    pred: ad.AnnData,
    real: ad.AnnData,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    profile: str = "vcc",
    real_de: Path | None = None,
    work_dir: str | Path | None = None,
    num_threads: int = 1,
) -> CellEvalResult:
    """Score predicted cells against real cells with cell-eval.

    Parameters
    ----------
    pred, real
        log1p(CP10k) cells in cell-eval's format (see the module docstring).
    profile
        cell-eval metric profile (``"vcc"``: the challenge's three metrics).
    real_de
        A real-data DE table from an earlier call on the same ``real`` (skips recomputing it).
    work_dir
        Where cell-eval writes its DE tables (a temporary folder when None).
    num_threads
        Threads of the differential-expression test.
    """
    from cell_eval import MetricsEvaluator

    _check_pair(pred, real, perturbation_key, control_label)
    pred, real = (_plain_labels(a, perturbation_key) for a in (pred, real))
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="cell_eval_"))
    quiet = [logging.getLogger(n) for n in ("cell_eval", "pdex")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        evaluator = MetricsEvaluator(
            adata_pred=pred, adata_real=real, de_real=str(real_de) if real_de else None,
            control_pert=control_label, pert_col=perturbation_key, num_threads=num_threads,
            outdir=str(work_dir), allow_discrete=False,
        )
        results, agg = evaluator.compute(profile=profile, write_csv=False, break_on_error=True)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    table = results.to_pandas().set_index("perturbation").sort_index()
    written = work_dir / "real_de.csv"
    return CellEvalResult(table, agg.to_pandas(), real_de or (written if written.is_file() else None))


@REGISTRY.register("normalized_score")
def normalized_score(user: pd.DataFrame, base: pd.DataFrame) -> pd.Series:
    """cell-eval's baseline-normalised score of ``user`` against ``base`` (aggregate tables
    of :func:`cell_eval`): one value per metric and ``avg_score``; 0 means "no better than
    the baseline", 1 a perfect prediction."""
    import polars as pl
    from cell_eval import score_agg_metrics

    if list(user.columns) != list(base.columns):
        raise InputError(f"aggregate tables differ in metrics: {list(user.columns)} vs {list(base.columns)}.")
    scores = score_agg_metrics(pl.from_pandas(user), pl.from_pandas(base)).to_pandas()
    return pd.Series(scores["from_baseline"].to_numpy(dtype=float), index=scores["metric"].to_numpy())


@REGISTRY.register("mean_shift_pearson")
def mean_shift_pearson(pred_shift: np.ndarray, real_shift: np.ndarray) -> float:
    """Pearson correlation of predicted and real mean shifts (perturbation - control)."""
    return correlation.pearson(pred_shift, real_shift)


#: Genes per perturbation of the scale-free scores.
TOP_DE = 50


def top_de_genes(real_de: pd.DataFrame | None, real_shift: pd.Series, n: int = TOP_DE) -> list[str]:
    """The ``n`` most differentially expressed genes of one perturbation: smallest p-value, then
    largest |log2 fold change| in cell-eval's real DE table (rows of the perturbation, columns
    ``feature``, ``p_value``, ``log2_fold_change``); by |mean shift| without a table."""
    if real_de is None or real_de.empty:
        return real_shift.abs().sort_values(ascending=False).index[:n].tolist()
    sized = real_de.assign(size=real_de["log2_fold_change"].abs())
    ranked = sized.sort_values(["p_value", "size"], ascending=[True, False])
    return ranked["feature"].astype(str).head(n).tolist()


@REGISTRY.register("top_de_pearson")
def top_de_pearson(pred_shift: pd.Series, real_shift: pd.Series, genes: list[str]) -> float:
    """Pearson r of predicted and real mean shifts on ``genes`` (e.g. :func:`top_de_genes`)."""
    return correlation.pearson(pred_shift[genes].to_numpy(), real_shift[genes].to_numpy())


def _energy(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance (V-statistic, >= 0) between the rows of ``x`` and of ``y``."""
    return float(2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean())


@REGISTRY.register("energy_ratio")
def energy_ratio(pred: np.ndarray, real: np.ndarray, *, seed: int = 0, max_cells: int = 200) -> float:
    """Energy distance of predicted to real cells over that of two random halves of the real
    cells (the predicted cells drawn to the size of a half): about 1 for a prediction as close as
    a second sample of the truth, larger the further it is. NaN with fewer than 4 real cells.

    pred (n, G), real (m, G) on one scale; at most ``max_cells`` cells per side are used."""
    if real.shape[0] < 4:
        return float("nan")
    rng = np.random.default_rng(seed)
    real = real[rng.permutation(real.shape[0])[: 2 * max_cells]]
    half = real.shape[0] // 2
    first, second = real[:half], real[half : 2 * half]
    drawn = pred[rng.choice(pred.shape[0], half, replace=pred.shape[0] < half)]
    reference = _energy(second, first)
    return _energy(drawn, first) / reference if reference > 0 else float("nan")
