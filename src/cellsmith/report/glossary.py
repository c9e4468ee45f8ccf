"""What every metric shown in a report means: definition, direction and chance level.

A report marks each metric column with its direction (↑ higher is better, ↓ lower is better) and
ends with the definitions of the metrics it shows, so that a reader never meets an undefined name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric as a reader needs it."""

    name: str
    definition: str
    higher_is_better: bool | None  # None: neither (a count, or closeness to a reference value)
    chance: str = ""

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]


_METRICS = [
    Metric("hit@k", "fraction of queries whose true perturbation is among the k best-ranked candidates "
           "(exact_hit@1: the top candidate is the right one).", True, "k / K for K candidates"),
    Metric("partial_hit@1", "fraction of queries whose top candidate shares at least one target gene with the "
           "truth (combinatorial perturbations).", True, "at least 1 / K"),
    Metric("MRR", "mean reciprocal rank: the mean of 1 / (rank of the true candidate); 1 when it is always "
           "ranked first.", True, "about ln(K) / K for K candidates"),
    Metric("nDCG@5", "normalised discounted cumulative gain at 5 with one relevant candidate: "
           "1 / log2(rank + 1) when the truth is in the top 5, else 0.", True, "about 2.9 / K for K candidates"),
    Metric("confidence AUC", "ROC AUC of the margin between the two best scores for telling right top-1 "
           "answers from wrong ones: does the model know when it is right?", True, "0.5"),
    Metric("r", "Pearson correlation between predicted and true values (needs at least 3 samples: with "
           "fewer it is undefined and shown as nan or n/a).", True, "0 (no linear relation)"),
    Metric("CCC", "Lin's concordance correlation coefficient: like Pearson r, but also penalises a shift or "
           "a scale difference between predicted and true values; 1 means identical.", True, "0"),
    Metric("MAE", "mean absolute error between predicted and true values (deconvolution: proportions; "
           "perturbation: pseudo-bulk log1p(CP10k) expression).", False),
    Metric("RMSE", "root mean squared error between predicted and true values.", False),
    Metric("R^2 (log)", "fraction of a bulk sample's log1p(CPM/100) variance that the reference signature "
           "times the predicted proportions explains; low: the bulk holds expression the reference "
           "cannot produce.", True, "0"),
    Metric("NNLS total", "sum of the raw NNLS coefficients of a bulk sample before they are scaled to "
           "proportions: the bulk's scale relative to the reference's mean cell profiles.", None),
    Metric("n", "number of values the row is computed on.", None),
    Metric("kNN mixing", "for each reconstructed cell, the share of its k nearest neighbours (joint PCA) that "
           "are real cells, divided by the share expected if real and reconstructed cells were "
           "indistinguishable, clipped at 1.", True, "0 when the two sources are fully separated"),
    Metric("mean Pearson", "Pearson r between the per-gene mean log1p(CP10k) of reconstructed and of real "
           "cells.", True, "0"),
    Metric("zero fraction agreement", "1 minus the mean over genes of |predicted - observed share of zero "
           "counts|; the predicted share is the mean of the model's P(count = 0).", True),
    Metric("energy distance", "distance between the real and reconstructed cell distributions in the joint "
           "PCA; compare it with the distance between two random halves of the real cells.", False,
           "the real-halves value"),
    Metric("energy distance (real halves)", "energy distance between two random halves of the real cells: "
           "the noise floor the energy distance can reach.", None),
    Metric("always-zero mean", "mean predicted count of genes that are zero in every training cell; should "
           "stay near 0.", False, "0"),
    Metric("DES", "differential expression score (cell-eval overlap_at_N): fraction of the genes truly "
           "differentially expressed against control that the prediction also calls differentially "
           "expressed (top N).", True, "about the fraction of genes that are DE"),
    Metric("PDS", "perturbation discrimination score (cell-eval discrimination_score_l1): 1 minus the "
           "normalised rank of the true perturbation when all real perturbations are ranked by L1 distance "
           "to the prediction; 1: the prediction is nearest its own real profile.", True, "0.5"),
    Metric("normalized score", "cell-eval's score against the perturbation-mean baseline: per metric "
           "1 - model/baseline for errors and (model - baseline) / (1 - baseline) for scores, clipped at 0, "
           "averaged; 0: no better than the baseline, 1: perfect.", True, "0 (the baseline)"),
    Metric("pearson delta", "Pearson r between predicted and real mean expression changes from control.",
           True, "0"),
    Metric("MSE", "mean squared error between predicted and real expression.", False),
]

# Names as they appear in table columns and text, normalised (lower case, spaces for _), to metrics.
_ALIASES = {
    "exact hit@1": "hit@k", "exact hit@5": "hit@k", "hit@1": "hit@k", "hit@5": "hit@k", "hit@k": "hit@k",
    "partial hit@1": "partial_hit@1", "mrr": "MRR", "ndcg@5": "nDCG@5", "confidence auc": "confidence AUC",
    "pearson": "r", "r": "r", "pearson r": "r", "ccc": "CCC", "mae": "MAE", "rmse": "RMSE", "n": "n",
    "fit r2 log hpvade": "R^2 (log)", "fit r2 log nnls": "R^2 (log)", "r2 log hpvade": "R^2 (log)",
    "r2 log nnls": "R^2 (log)", "nnls total": "NNLS total", "knn mixing": "kNN mixing", "mean pearson": "mean Pearson",
    "zero fraction agreement": "zero fraction agreement", "energy distance": "energy distance",
    "energy distance real halves": "energy distance (real halves)", "always zero mean": "always-zero mean",
    "des": "DES", "overlap at n": "DES", "pds": "PDS", "discrimination score l1": "PDS",
    "normalized score": "normalized score", "pearson delta": "pearson delta", "mse": "MSE",
}
_BY_NAME = {m.name: m for m in _METRICS}
# Statistics and comparisons appended to a metric's name in wide tables.
_SUFFIX = re.compile(r"[ _](mean|sd|std|on|off|gap|hpvade|nnls|ratio)$")
_PREFIX = re.compile(r"^(head|baseline|fit) ")


def lookup(column: object) -> Metric | None:
    """The metric a column or label names (``mrr_mean``, ``exact_hit@1_gap``, ``CCC``), if any."""
    name = _PREFIX.sub("", " ".join(str(column).replace("_", " ").lower().split()))
    while name not in _ALIASES and _SUFFIX.search(name):
        name = _SUFFIX.sub("", name)
    key = _ALIASES.get(name)
    return _BY_NAME[key] if key else None


def arrow(column: object) -> str:
    """↑ / ↓ for a metric column; nothing for spreads (``_sd``), differences (``_gap``) and non-metrics."""
    name = str(column).lower()
    if re.search(r"[ _](sd|std|gap)$", name):
        return ""
    metric = lookup(column)
    return metric.arrow if metric else ""


def retrieval_chance(n_candidates: int) -> dict[str, str]:
    """Chance levels of the ranking metrics for a uniformly random ranking of ``n_candidates``."""
    k = n_candidates
    mrr = sum(1 / r for r in range(1, k + 1)) / k
    ndcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, 5) + 1)) / k
    return {
        "hit@1": f"1/K = {1 / k:.3f} (hit@5: {min(5, k) / k:.3f}) with K = {k} candidates",
        "MRR": f"{mrr:.3f} (mean of 1/rank over ranks 1..{k})",
        "nDCG@5": f"{ndcg:.3f} with K = {k} candidates",
    }
