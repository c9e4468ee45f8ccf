"""Acceptance 1, 2 and 4b of retrieval: the full table on Papalexi 2021 or a simulated screen.

Runs ``cellsmith retrieve run``'s engine (pca, logreg, head:pca x mean / bootstrap / raw_cell x
cell / pseudobulk:50 x mask on and off x seeds 42, 43 by default), times it, and prints (or
writes into BENCHMARKS.md) the metrics table, the leakage gap split by masked / unmasked
targets, and the head-vs-logreg check. ``--pseudobulk-scale`` adds the comparison of
pseudo-bulk queries embedded from summed counts vs averaged cell embeddings.

    .venv/bin/python benchmarks/retrieval_benchmark.py --dataset papalexi [--out DIR] [--write]
    .venv/bin/python benchmarks/retrieval_benchmark.py --dataset simulated [--write]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellsmith.data.rows import CountRows
from cellsmith.datasets import simulated_perturbseq
from cellsmith.metrics.retrieval import retrieval_metrics
from cellsmith.retrieval import (
    LogRegEmbedder,
    PCAEmbedder,
    QuerySpec,
    RetrievalConfig,
    RetrievalWarning,
    ScreenCounts,
    build_library,
    build_queries,
    mask_counts,
    run_retrieval,
    score,
    split_cells,
)
from cellsmith.retrieval.report import write_results
from cellsmith.retrieval.runner import limit_threads
from cellsmith.retrieval.tables import best_vs_baseline, head_vs_baseline, summarise

from _common import machine, today, write_section

PAPALEXI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "papalexi2021_thp1_eccite.h5ad"


def markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub markdown table (floats to 4 significant digits)."""
    frame = frame.reset_index() if index else frame
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def load(dataset: str) -> ad.AnnData:
    if dataset == "papalexi":
        return ad.read_h5ad(PAPALEXI)
    return simulated_perturbseq(n_cells=6000, n_genes=500, n_targets=60, seed=0)


def masked_target_gap(rankings: pd.DataFrame, masked: list[str]) -> pd.DataFrame:
    """exact_hit@1 with mask on / off for queries of masked targets vs all other queries (mean library)."""
    shown = rankings[rankings["library"] == "mean"]
    shown = shown.assign(targets=np.where(shown["truth"].isin(masked), "masked targets", "other candidates"),
                         hit=shown["rank"] == 1)
    table = shown.pivot_table(
        index=["embedder", "query", "targets"], columns="mask", values="hit", aggfunc="mean", sort=False
    )
    table["gap (off - on)"] = table["off"] - table["on"]
    return table[["on", "off", "gap (off - on)"]]


def pseudobulk_scale(adata: ad.AnnData, seed: int = 42, size: int = 50) -> pd.DataFrame:
    """MRR of pseudo-bulk queries embedded from summed counts vs from averaged cell embeddings."""
    labels = adata.obs["target_gene"].astype(str).to_numpy()
    split = split_cells(labels, seed=seed)
    counts = mask_counts(adata, perturbation_key="target_gene", control_label="non-targeting")
    train, y = counts.rows(split.train), split.codes[split.train]
    test = counts.rows(split.test)
    queries = build_queries(split, QuerySpec(size), obs_names=adata.obs_names, seed=seed)
    # the same groups of test cells, as summed (masked) counts
    summed = ScreenCounts(
        CountRows(sp.csr_matrix((queries.members * size) @ test.csr())), test.genes, test.masked_genes, True
    )
    rows = []
    for embedder in (PCAEmbedder(), LogRegEmbedder()):
        embedder.fit(train, y, val=train, val_labels=y, seed=seed)
        library = build_library(
            "mean", embedder.transform(train), y, n_candidates=len(split.candidates), similarity=embedder.similarity,
            seed=seed,
        )
        for name, emb in (
            ("mean of cell embeddings", queries.members @ embedder.transform(test)),
            ("embedding of summed counts", embedder.transform(summed)),
        ):
            metrics = retrieval_metrics(score(library, np.asarray(emb, dtype=np.float32)), queries.truth)
            rows.append(
                {
                    "embedder": embedder.name,
                    "pseudo-bulk query": name,
                    "mrr": metrics["mrr"],
                    "exact_hit@1": metrics["exact_hit@1"],
                }
            )
    return pd.DataFrame(rows).set_index(["embedder", "pseudo-bulk query"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=["papalexi", "simulated"], default="papalexi")
    parser.add_argument("--embedders", default="pca,logreg,head:pca")
    parser.add_argument("--libraries", default="mean,bootstrap,raw_cell")
    parser.add_argument("--queries", default="cell,pseudobulk:50")
    parser.add_argument("--seeds", default="42,43")
    parser.add_argument("--out", type=Path, help="also write the run's files here")
    parser.add_argument("--pseudobulk-scale", action="store_true")
    parser.add_argument("--key", help="BENCHMARKS.md section key (default retrieval-DATASET)")
    parser.add_argument("--write", action="store_true", help="write the result into BENCHMARKS.md")
    parser.add_argument("--no-leakage-gap", action="store_true", help="mask on only (skip the mask-off ablation)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RetrievalWarning)
    adata = load(args.dataset)
    config = RetrievalConfig(
        embedders=args.embedders.split(","), libraries=args.libraries.split(","), queries=args.queries.split(","),
        seeds=[int(s) for s in args.seeds.split(",")], leakage_gap=not args.no_leakage_gap,
    )
    load_before = machine()
    start = time.perf_counter()
    result = run_retrieval(adata, config, progress=False)
    elapsed = time.perf_counter() - start
    if args.out is not None:
        write_results(result, args.out)
    summary = summarise(result.metrics, result.metric_columns).set_index(["embedder", "library", "query", "mask"])
    shown = summary[
        [
            "exact_hit@1_mean", "exact_hit@1_sd", "exact_hit@5_mean", "mrr_mean", "mrr_sd", "ndcg@5_mean", "ndcg@5_sd",
            "confidence_auc_mean",
        ]
    ]
    masked = result.info.get("masked_genes") or []
    parts = [
        f"`.venv/bin/python benchmarks/retrieval_benchmark.py --dataset {args.dataset} --embedders {args.embedders} "
        f"--libraries {args.libraries} --queries {args.queries} --seeds {args.seeds}"
        f"{' --no-leakage-gap' if args.no_leakage_gap else ''} --write` — {today()}",
        f"Machine: {load_before} (at start; other jobs share the 2 cores).",
        f"{adata.n_obs:,} cells x {adata.n_vars} genes, {len(result.info['candidates'])} candidates (control "
        f"included), skipped: {result.info['skipped'] or 'none'}; masked genes ({len(masked)}): {', '.join(masked)}.",
        f"**Whole table: {elapsed:.0f} s** ({len(result.metrics)} rows; fits: "
        + ", ".join(f"{f['embedder']} {f['fit_seconds']} s" for f in result.info["fits"][: len(config.embedders)])
        + " for the first mask/seed).",
        "Mean and SD over seeds:\n\n" + markdown(shown),
    ]
    if "off" in set(result.metrics["mask"]):
        parts.append(
            "exact_hit@1 of queries whose truth is a masked target vs the other candidates (mean library, "
            "mean over seeds):\n\n" + markdown(masked_target_gap(result.rankings, masked))
        )
    heads = head_vs_baseline(result.metrics)
    if not heads.empty:
        parts.append(
            "Learned head vs logreg, mask on, pseudo-bulk queries (pass = MRR and nDCG@5 within 5% "
            "relative, or better):\n\n" + markdown(heads, index=False)
        )
    best = best_vs_baseline(result.metrics)
    if not best.empty:
        parts.append(
            "Best library of each embedder vs logreg's best (its class ranking included), mask on, MRR "
            "mean and SD over seeds:\n\n" + markdown(best, index=False)
        )
    if args.pseudobulk_scale:
        with limit_threads(1):
            parts.append(
                "Pseudo-bulk queries (50 cells, seed 42, mask on, mean library) embedded two ways:\n\n"
                + markdown(pseudobulk_scale(adata))
            )
    text = "\n\n".join(parts)
    print(text)
    if args.write:
        write_section(args.key or f"retrieval-{args.dataset}", text)


if __name__ == "__main__":
    main()
