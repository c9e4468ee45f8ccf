"""Derived tables of a run: mean and spread over seeds, the leakage gap, head vs logreg."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: A learned head passes when it reaches the baseline's MRR and nDCG@5 minus this fraction.
HEAD_TOLERANCE = 0.05
SETTING = ["embedder", "library", "query", "mask"]


def summarise(metrics: pd.DataFrame, metric_columns: list[str]) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (embedder, library, query, mask)."""
    grouped = metrics.groupby(SETTING, sort=False)[metric_columns]
    table = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=0).add_suffix("_sd"))
    table["n_seeds"] = metrics.groupby(SETTING, sort=False).size()
    return table.reset_index()


def leakage_gap(metrics: pd.DataFrame, metric_columns: list[str]) -> pd.DataFrame:
    """Ablation of masking: metric with mask off minus mask on (mean over seeds).

    A positive gap is what the model gains from seeing the targets' own counts.
    """
    means = metrics.groupby(SETTING, sort=False)[metric_columns].mean().reset_index()
    if set(means["mask"]) != {"on", "off"}:
        return pd.DataFrame()
    wide = means.pivot_table(index=SETTING[:-1], columns="mask", values=metric_columns, sort=False)
    out = pd.DataFrame(index=wide.index)
    for column in ("exact_hit@1", "mrr", "ndcg@5"):
        out[f"{column}_on"] = wide[(column, "on")]
        out[f"{column}_off"] = wide[(column, "off")]
        out[f"{column}_gap"] = wide[(column, "off")] - wide[(column, "on")]
    return out.reset_index()


def head_vs_baseline(metrics: pd.DataFrame, *, baseline: str = "logreg") -> pd.DataFrame:
    """Acceptance check: each learned head against ``baseline`` with mask on and pseudo-bulk
    queries, on the same library and on the baseline's class-probability ranking (``class``);
    ``passes`` when the head's MRR and nDCG@5 are both at least 95% of the baseline's."""
    on = metrics[(metrics["mask"] == "on") & metrics["query"].str.startswith("pseudobulk")]
    means = on.groupby(["embedder", "library", "query"], sort=False)[["mrr", "ndcg@5"]].mean()
    heads = [e for e in means.index.get_level_values(0).unique() if e.startswith("head:")]
    rows = []
    for head in heads:
        for (library, query), values in means.loc[head].iterrows():
            for base_library in dict.fromkeys((library, "class")):
                if (baseline, base_library, query) not in means.index:
                    continue
                base = means.loc[(baseline, base_library, query)]
                ratio = {m: values[m] / base[m] if base[m] > 0 else np.nan for m in ("mrr", "ndcg@5")}
                rows.append({
                    "head": head, "library": library, "query": query, "baseline": f"{baseline} ({base_library})",
                    "head_mrr": values["mrr"], "baseline_mrr": base["mrr"], "mrr_ratio": ratio["mrr"],
                    "head_ndcg@5": values["ndcg@5"], "baseline_ndcg@5": base["ndcg@5"], "ndcg@5_ratio": ratio["ndcg@5"],
                    "passes": bool(min(ratio.values()) >= 1 - HEAD_TOLERANCE),
                })
    return pd.DataFrame(rows)


def best_vs_baseline(metrics: pd.DataFrame, *, baseline: str = "logreg") -> pd.DataFrame:
    """Each embedder's best library against the baseline's best, per query type, mask on.

    "Best" is the library of the highest MRR averaged over seeds (the baseline's ``class``
    ranking included); ``mrr_ratio`` is the embedder's over the baseline's, ``reaches`` whether
    it is at least 1.
    """
    on = metrics[metrics["mask"] == "on"]
    stats = on.groupby(["query", "embedder", "library"], sort=False)["mrr"].agg(["mean", "std"]).reset_index()
    best = stats.loc[stats.groupby(["query", "embedder"], sort=False)["mean"].idxmax()]
    base = best[best["embedder"] == baseline].set_index("query")
    rows = []
    for _, row in best[best["embedder"] != baseline].iterrows():
        if row["query"] not in base.index:
            continue
        ref = base.loc[row["query"]]
        rows.append(
            {
                "query": row["query"],
                "embedder": row["embedder"],
                "library": row["library"],
                "mrr": row["mean"],
                "mrr_sd": row["std"],
                "baseline": f"{baseline} ({ref['library']})",
                "baseline_mrr": ref["mean"],
                "baseline_mrr_sd": ref["std"],
                "mrr_ratio": row["mean"] / ref["mean"],
                "reaches": bool(row["mean"] >= ref["mean"]),
            }
        )
    return pd.DataFrame(rows)
