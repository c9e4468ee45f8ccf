"""``cellsmith retrieve``: the perturbation retrieval benchmark from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cellsmith.cli_options import BACKED

retrieve_app = typer.Typer(
    help="Perturbation retrieval: which perturbation produced these cells?", no_args_is_help=True
)
out = Console(soft_wrap=True)


def _split(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@retrieve_app.command("run")
def run(
    data: Path = typer.Option(..., "--data", help="Screen as .h5ad with raw counts."),
    perturbation_key: Optional[str] = typer.Option(
        None, "--perturbation-key", help="obs column of perturbation labels (default target_gene)."
    ),
    control_label: Optional[str] = typer.Option(
        None, "--control-label", help="Label of control cells (default non-targeting)."
    ),
    embedders: Optional[str] = typer.Option(
        None,
        "--embedders",
        help="Comma list: pca, logreg, scvi, foundation, head:BASE[:MODE[:LOSS]] (MODE head, finetune or lora).",
    ),
    library: Optional[str] = typer.Option(
        None,
        "--library",
        help="Comma list of mean, bootstrap, raw_cell (class: rank by class probability, added for logreg).",
    ),
    query: Optional[str] = typer.Option(None, "--query", help="Comma list of cell, pseudobulk:N."),
    mask: Optional[bool] = typer.Option(
        None,
        "--mask/--no-mask",
        help="Zero the targets' counts before normalising (default on; also runs off for the leakage gap).",
    ),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma list of split seeds (default 42)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with any RetrievalConfig option."),
    foundation_checkpoint: Optional[Path] = typer.Option(
        None, "--foundation-checkpoint", help="scGPT checkpoint directory (args.json, vocab.json, best_model.pt)."
    ),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer with raw counts (default X)."),
    accelerator: Optional[str] = typer.Option(
        None,
        "--accelerator",
        help="Learned heads train and embed on: auto (a GPU when one is visible), cpu, gpu or mps.",
    ),
    devices: Optional[str] = typer.Option(
        None, "--devices", help="Devices per learned head (1; the benchmark trains its heads in one process)."
    ),
    precision: Optional[str] = typer.Option(
        None, "--precision", help="Learned heads: 32, bf16-mixed or 16-mixed (16-mixed needs a GPU)."
    ),
    max_epochs: Optional[int] = typer.Option(
        None, "--max-epochs", help="Learned heads: upper bound on training epochs (default 30)."
    ),
    max_steps: Optional[int] = typer.Option(
        None, "--max-steps", help="Learned heads: upper bound on optimiser steps (default no limit)."
    ),
    backed: bool = BACKED,
    out_dir: Path = typer.Option(..., "--out", help="Output folder (replaced only when the run succeeds)."),
) -> None:
    """Rank every perturbation for held-out cells and pseudo-bulks; write metrics.csv and a report."""
    from cellsmith.data import read
    from cellsmith.data.rows import read_backed
    from cellsmith.errors import InputError
    from cellsmith.report import atomic_output_dir
    from cellsmith.retrieval.config import RetrievalConfig
    from cellsmith.retrieval.heads import HeadConfig
    from cellsmith.retrieval.report import write_results
    from cellsmith.retrieval.runner import run_retrieval

    try:
        seed_list = None if seeds is None else [int(s) for s in _split(seeds)]
    except ValueError:
        raise InputError(f"--seeds takes comma-separated integers, e.g. 42,43; got '{seeds}'.") from None
    overrides = {
        "perturbation_key": perturbation_key,
        "control_label": control_label,
        "embedders": _split(embedders),
        "libraries": _split(library),
        "queries": _split(query),
        "mask": mask,
        "seeds": seed_list,
        "layer": layer,
    }
    cfg = RetrievalConfig.from_yaml(config, **overrides)
    head_flags = {
        "accelerator": accelerator,
        "devices": devices,
        "precision": precision,
        "max_epochs": max_epochs,
        "max_steps": max_steps,
    }
    if any(v is not None for v in head_flags.values()):
        cfg.head = HeadConfig.from_yaml(None, **{**cfg.head.model_dump(), **head_flags})
    if foundation_checkpoint is not None:
        cfg.foundation = cfg.foundation.model_copy(update={"checkpoint": foundation_checkpoint})
    adata = read_backed(data) if backed else read(data)
    with atomic_output_dir(out_dir) as tmp:
        result = run_retrieval(adata, cfg, work_dir=tmp / "heads")
        write_results(result, tmp)
    table = result.metrics.groupby(["embedder", "library", "query", "mask"], sort=False)[
        ["exact_hit@1", "mrr", "ndcg@5"]
    ].mean()
    out.print(table.round(4).to_string())
    coverage = {fit["embedder"]: fit["vocabulary"] for fit in result.info["fits"] if fit.get("vocabulary")}
    for name, text in coverage.items():
        out.print(f"{name}: {text}")
    out.print(f"results written to {out_dir.resolve()} (metrics.csv, rankings.csv.gz, report.html)")
