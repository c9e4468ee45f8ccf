"""The benchmark runner: masks, splits, embedders, libraries, queries, seeds -> tables.

For every mask setting and seed the cells are split once; every embedder is fitted on the
training cells of that split, embeds the training cells (library) and the queries, and every
library ranks all candidates for every query. Metrics come from
:mod:`cellsmith.metrics.retrieval`; nothing here computes a metric itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from threadpoolctl import threadpool_limits

from cellsmith._logging import logger
from cellsmith.data import is_control, parse_perturbation
from cellsmith.data.audit import describe_source
from cellsmith.data.io import require_unique_genes
from cellsmith.data.rows import count_rows
from cellsmith.errors import ConfigError, InputError
from cellsmith.metrics.retrieval import retrieval_metrics, top_two, truth_ranks
from cellsmith.nn import resolve_accelerator, torch_threads
from cellsmith.retrieval.config import RetrievalConfig
from cellsmith.retrieval.embedders import Embedder
from cellsmith.retrieval.factory import make_embedder
from cellsmith.retrieval.libraries import build_library, score
from cellsmith.retrieval.masking import mask_counts
from cellsmith.retrieval.splits import Queries, QuerySpec, build_queries, split_cells

KEYS = ["embedder", "library", "query", "mask", "seed"]
METRICS = ["exact_hit@1", "exact_hit@5", "mrr", "ndcg@5", "confidence_auc"]


@dataclass
class RetrievalResult:
    """Tables of one benchmark run.

    Attributes
    ----------
    metrics
        One row per (embedder, library, query, mask, seed): exact_hit@1, exact_hit@5, mrr,
        ndcg@5, confidence_auc (and partial_hit@1 when candidates include combinations).
    rankings
        One row per query and setting: truth, its rank, top-1, top-5 and the confidence.
    info
        Candidates, skipped perturbations, masked genes, fit times, head training details.
    """

    metrics: pd.DataFrame
    rankings: pd.DataFrame
    config: RetrievalConfig
    info: dict = field(default_factory=dict)

    @property
    def metric_columns(self) -> list[str]:
        return [c for c in self.metrics.columns if c not in KEYS]


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Run with ``n`` BLAS / OpenMP and torch threads. The matrices here are small, so with more
    threads on a shared machine the time goes to thread synchronisation (measured on 2 busy
    cores: logreg fit 10.6 s -> 0.5 s, head step 90 ms -> 3 ms with one thread)."""
    with torch_threads(n), threadpool_limits(limits=n):
        yield


def check_labels(adata: ad.AnnData, config: RetrievalConfig) -> np.ndarray:
    """The perturbation labels, after checking the key and the control label exist."""
    key = config.perturbation_key
    if key not in adata.obs:
        raise InputError(
            f"obs has no column '{key}' (columns: {', '.join(map(str, adata.obs.columns))}); pass --perturbation-key."
        )
    labels = adata.obs[key].astype(str).to_numpy()
    if config.control_label not in set(labels):
        lookalikes = sorted({label for label in labels if is_control(label)})
        hint = f" Labels that look like controls: {', '.join(lookalikes)}." if lookalikes else ""
        raise InputError(
            f"control label '{config.control_label}' not found in obs['{key}'] "
            f"({len(set(labels))} labels, e.g. {', '.join(sorted(set(labels))[:6])}).{hint} "
            "Pass --control-label with the label of the unperturbed cells."
        )
    return labels


def check_head_devices(config: RetrievalConfig) -> None:
    """Fail before any fit when the heads cannot train on the asked accelerator, or on several
    devices: DDP starts one process per device that re-runs the whole command, and the benchmark
    trains many small heads (seconds each) in one process."""
    head = config.head
    accelerator = resolve_accelerator(head)
    n_devices = (
        head.devices if isinstance(head.devices, int) else (torch.cuda.device_count() if accelerator == "gpu" else 1)
    )
    if n_devices > 1:
        raise ConfigError(
            f"head devices {head.devices} ({n_devices} devices): the retrieval benchmark trains its heads on "
            "one device; pass --devices 1 (or train a RetrievalHead on several devices from a script)."
        )


def _ranking_rows(scores: np.ndarray, truth: np.ndarray, ids: np.ndarray, candidates: np.ndarray) -> pd.DataFrame:
    top1, margin = top_two(scores)
    k = min(5, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return pd.DataFrame(
        {
            "query_id": ids,
            "truth": candidates[truth],
            "rank": truth_ranks(scores, truth),
            "top1": candidates[top1],
            "top5": [";".join(row) for row in candidates[top]],
            "confidence": margin,
        }
    )


def _library_kinds(embedder: Embedder, config: RetrievalConfig) -> list[str]:
    """The configured libraries, plus ``class`` for embedders that rank classes (logreg, classification heads)."""
    kinds = [k for k in config.libraries if k != "class" or embedder.ranks_classes]
    if embedder.ranks_classes and config.classifier_ranking and "class" not in kinds:
        kinds.append("class")
    return kinds


def _evaluate(
    embedder: Embedder,
    library_emb: np.ndarray,
    train_codes: np.ndarray,
    test_emb: np.ndarray,
    queries: dict[str, Queries],
    *,
    config: RetrievalConfig,
    candidates: np.ndarray,
    gene_sets: list[frozenset[str]] | None,
    key: dict,
) -> tuple[list[dict], list[pd.DataFrame]]:
    """Metric rows and per-query rankings of one fitted embedder, every library and query."""
    class_emb = embedder.class_scores(test_emb) if embedder.ranks_classes else None
    # the class library is one one-hot entry per candidate: it needs the candidates, not embeddings
    no_embedding = np.broadcast_to(np.zeros((1, len(candidates)), np.float32), (len(train_codes), len(candidates)))
    libraries = {
        kind: build_library(
            kind, no_embedding if kind == "class" else library_emb, train_codes, n_candidates=len(candidates),
            similarity="dot" if kind == "class" else embedder.similarity, seed=key["seed"],
            n_bootstrap=config.n_bootstrap, bootstrap_fraction=config.bootstrap_fraction, k=config.raw_cell_k,
        )
        for kind in _library_kinds(embedder, config)
    }
    rows, rankings = [], []
    for query_name, query in queries.items():
        query_emb = np.asarray(query.members @ test_emb, dtype=np.float32)
        for kind, library in libraries.items():
            scores = score(
                library, np.asarray(query.members @ class_emb, dtype=np.float32) if kind == "class" else query_emb
            )
            row_key = {k: {**key, "library": kind, "query": query_name}[k] for k in KEYS}
            rows.append({**row_key, **retrieval_metrics(scores, query.truth, gene_sets=gene_sets)})
            rankings.append(_ranking_rows(scores, query.truth, query.ids, candidates).assign(**row_key))
    return rows, rankings


def run_retrieval(
    adata: ad.AnnData, config: RetrievalConfig | None = None, *, work_dir: Path | None = None, progress: bool = True
) -> RetrievalResult:
    """Run the benchmark on a screen of raw counts.

    Parameters
    ----------
    adata
        Cells x genes, raw counts in X (or ``config.layer``), labels in ``obs[config.perturbation_key]``;
        in memory or opened backed (:func:`cellsmith.data.rows.read_backed`), when the counts are
        read from disk by row blocks. Counts stay sparse; rows are masked and normalised block
        by block as embedders take them.
    config
        What to run (defaults: pca, logreg, head:pca x mean, bootstrap, raw_cell x cell,
        pseudobulk:50 x mask on and off x seed 42).
    work_dir
        Where learned heads keep checkpoints and training logs (a temporary folder if None).
    """
    config = config or RetrievalConfig()
    require_unique_genes(adata.var_names, describe_source(adata))  # masking finds targets by name
    labels = check_labels(adata, config)
    if any(spec.startswith("head:") for spec in config.embedders):
        check_head_devices(config)
    splits = {
        seed: split_cells(
            labels, seed=seed, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
            min_cells=config.min_cells,
        )
        for seed in config.seeds
    }
    first = splits[config.seeds[0]]
    candidates = np.asarray(first.candidates)
    gene_sets = [parse_perturbation(c, config.control_label) for c in first.candidates]
    combos = any(len(g) > 1 for g in gene_sets)
    specs = [QuerySpec.parse(q) for q in config.queries]
    info: dict = {
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "candidates": list(first.candidates),
        "skipped": first.skipped,
        "masked_genes": [],
        "fits": [],
    }
    rows, rankings = [], []
    steps = len(config.mask_modes) * len(config.seeds) * len(config.embedders)
    source = count_rows(adata, layer=config.layer)
    with Progress(disable=not progress, transient=True) as bar, limit_threads(config.threads):
        task = bar.add_task("retrieval", total=steps)
        for mask in config.mask_modes:
            counts = mask_counts(
                adata, perturbation_key=config.perturbation_key, control_label=config.control_label, mask=mask,
                layer=config.layer, source=source,
            )
            if mask:
                info["masked_genes"] = list(counts.masked_genes)
            mask_name = "on" if mask else "off"
            for seed, split in splits.items():
                train, val = counts.rows(split.train), counts.rows(split.val)
                y_train, y_val = split.codes[split.train], split.codes[split.val]
                test = counts.rows(split.test)
                queries = {
                    s.name: build_queries(
                        split, s, obs_names=adata.obs_names, seed=seed,
                        per_perturbation=config.pseudobulk_per_perturbation,
                    )
                    for s in specs
                }
                for spec in config.embedders:
                    bar.update(task, description=f"mask {mask_name}, seed {seed}: {spec}")
                    run_dir = (
                        None
                        if work_dir is None
                        else Path(work_dir) / f"{spec.replace(':', '_')}_mask-{mask_name}_seed-{seed}"
                    )
                    embedder = make_embedder(spec, config, work_dir=run_dir)
                    started = time.perf_counter()
                    embedder.fit(train, y_train, val=val, val_labels=y_val, seed=seed)
                    library_emb = embedder.transform(train)
                    fit_s = time.perf_counter() - started
                    info["fits"].append(
                        {
                            "embedder": spec,
                            "mask": mask_name,
                            "seed": seed,
                            "fit_seconds": round(fit_s, 2),
                            **{
                                k: getattr(embedder, k)
                                for k in ("epochs_trained", "best_val_hit1", "vocabulary")
                                if getattr(embedder, k, "") != ""
                            },
                        }
                    )
                    rows_, rankings_ = _evaluate(
                        embedder, library_emb, y_train, embedder.transform(test), queries, config=config,
                        candidates=candidates, gene_sets=gene_sets if combos else None,
                        key={"embedder": spec, "mask": mask_name, "seed": seed},
                    )
                    rows += rows_
                    rankings += rankings_
                    bar.advance(task)
                    logger.debug("%s mask %s seed %d fitted in %.1f s", spec, mask_name, seed, fit_s)
    metrics = pd.DataFrame(rows)
    ranking_table = pd.concat(rankings, ignore_index=True)
    ranking_table = ranking_table[KEYS + [c for c in ranking_table.columns if c not in KEYS]]
    return RetrievalResult(metrics, ranking_table, config, info)
