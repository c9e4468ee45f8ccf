"""Files and the HTML page of a retrieval run: tables, rank histograms, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cellsmith.report import Report
from cellsmith.report.figures import legend_outside
from cellsmith.report.glossary import retrieval_chance
from cellsmith.retrieval.runner import RetrievalResult
from cellsmith.retrieval.tables import head_vs_baseline, leakage_gap, summarise


def _main_mask(rankings: pd.DataFrame) -> str:
    return "on" if (rankings["mask"] == "on").any() else "off"


def rank_histograms(rankings: pd.DataFrame, n_candidates: int):
    """One panel per (query, library): histogram of the truth's rank per embedder."""
    import matplotlib.pyplot as plt

    shown = rankings[rankings["mask"] == _main_mask(rankings)]
    queries, libraries = shown["query"].unique(), shown["library"].unique()
    fig, axes = plt.subplots(len(queries), len(libraries), figsize=(3.6 * len(libraries), 2.8 * len(queries)),
                             squeeze=False, sharex=True)
    bins = np.arange(1, n_candidates + 2) - 0.5
    colours = {e: f"C{i}" for i, e in enumerate(shown["embedder"].unique())}  # same colour in every panel
    for (i, query), (j, library) in ((a, b) for a in enumerate(queries) for b in enumerate(libraries)):
        ax = axes[i, j]
        subset = shown[(shown["query"] == query) & (shown["library"] == library)]
        for embedder, ranks in subset.groupby("embedder", sort=False)["rank"]:
            ax.hist(ranks, bins=bins, histtype="step", density=True, color=colours[embedder], linewidth=1.4)
        ax.set_title(f"{query}, {library}", fontsize=9)
        ax.set_xlabel("rank of the true perturbation")
    axes[0, 0].set_ylabel("fraction of queries")
    handles = [plt.Line2D([], [], color=c, label=e) for e, c in colours.items()]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, 1.04))
    fig.tight_layout()
    return fig


def calibration_plot(rankings: pd.DataFrame, n_bins: int = 10):
    """Fraction of correct top-1 per confidence decile (per query type and embedder,
    first library): a useful confidence rises from left to right."""
    import matplotlib.pyplot as plt

    shown = rankings[(rankings["mask"] == _main_mask(rankings)) & (rankings["library"] == rankings["library"].iloc[0])]
    queries = shown["query"].unique()
    fig, axes = plt.subplots(1, len(queries), figsize=(4 * len(queries), 3), squeeze=False)
    for ax, query in zip(axes[0], queries, strict=True):
        for embedder, group in shown[shown["query"] == query].groupby("embedder", sort=False):
            decile = pd.qcut(group["confidence"].rank(method="first"), n_bins, labels=False)
            accuracy = (group["rank"] == 1).groupby(decile).mean()
            ax.plot(accuracy.index + 1, accuracy.to_numpy(), marker="o", label=embedder)
        ax.set_title(f"{query}, {shown['library'].iloc[0]} library", fontsize=9)
        ax.set_xlabel("confidence decile (top-2 margin)")
        ax.set_ylabel("top-1 correct")
        ax.set_ylim(0, 1)
    legend_outside(axes[0, -1], fontsize=7)
    fig.tight_layout()
    return fig


def build_report(result: RetrievalResult, out_dir: Path, *, title: str = "Perturbation retrieval") -> Report:
    """Write summary.csv, ablation.csv, head_vs_logreg.csv and figures; return the page."""
    report = Report(title)
    info, columns = result.info, result.metric_columns
    summary = summarise(result.metrics, columns)
    gap = leakage_gap(result.metrics, columns)
    heads = head_vs_baseline(result.metrics)
    summary.to_csv(out_dir / "summary.csv", index=False)
    gap.to_csv(out_dir / "ablation.csv", index=False)
    heads.to_csv(out_dir / "head_vs_logreg.csv", index=False)
    report.text(
        f"{info['n_cells']:,} cells x {info['n_genes']:,} genes; {len(info['candidates'])} candidates "
        f"(control included); seeds {', '.join(map(str, result.config.seeds))}. Masked genes: "
        f"{', '.join(info.get('masked_genes') or []) or 'none'}."
    )
    for metric, chance in retrieval_chance(len(info["candidates"])).items():
        report.define(metric, chance=chance)
    if info["skipped"]:
        report.text("Skipped (too few cells to split): " + ", ".join(f"{k} ({v})" for k, v in info["skipped"].items()),
                    css_class="warn")
    seeds = result.config.seeds
    report.heading(
        f"Metrics (mean over {len(seeds)} seeds)" if len(seeds) > 1 else f"Metrics (seed {seeds[0]})", level=3
    )
    report.table(
        summary.set_index(["embedder", "library", "query", "mask"])[
            [f"{c}_mean" for c in columns] + [f"{c}_sd" for c in columns[:3]]
        ]
    )
    if not gap.empty:
        report.heading("Leakage gap: mask off minus mask on", level=3)
        report.table(gap.set_index(["embedder", "library", "query"]))
    if not heads.empty:
        report.heading("Learned heads vs logreg (mask on, pseudo-bulk queries; pass = within 5%)", level=3)
        report.table(heads.set_index(["head", "library", "query", "baseline"]))
    n_candidates = len(info["candidates"])
    report.figure(
        rank_histograms(result.rankings, n_candidates),
        caption="Rank of the true perturbation.",
        save_png=out_dir / "rank_histograms.png",
    )
    report.figure(
        calibration_plot(result.rankings),
        caption="Confidence calibration: top-1 accuracy per confidence decile.",
        save_png=out_dir / "calibration.png",
    )
    return report


def write_results(result: RetrievalResult, out_dir: str | Path) -> Report:
    """Write every output of a run into ``out_dir`` (metrics.csv, rankings.csv.gz, summary.csv,
    ablation.csv, head_vs_logreg.csv, run.json, config.yaml, figures, report.html); return
    the report page."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.metrics.to_csv(out_dir / "metrics.csv", index=False)
    result.rankings.to_csv(out_dir / "rankings.csv.gz", index=False)
    result.config.to_yaml(out_dir / "config.yaml")
    (out_dir / "run.json").write_text(json.dumps(result.info, indent=2, default=str))
    report = build_report(result, out_dir)
    report.write(out_dir / "report.html")
    return report
