"""``cellsmith perturb``: pretrain, finetune, predict, evaluate (thin: parse, call, print)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cellsmith.cli_options import (
    ACCELERATOR,
    BACKED,
    DEVICES,
    MAX_EPOCHS,
    MAX_STEPS,
    PRECISION,
    PROGRESS,
    steps,
    table_text,
)
from cellsmith.errors import InputError

out = Console(soft_wrap=True)
app = typer.Typer(help="Perturbation response: pretrain, fine-tune, predict, evaluate.", no_args_is_help=True)


# Options shared by the two training commands; they override the --config file.
COUNTS_LAYER = typer.Option(None, "--counts-layer", help="Layer with raw counts (default X).")


def _dataset_names(paths: list[Path]) -> list[str]:
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        return [f"{p.stem}_{i}" for i, p in enumerate(paths)]
    return names


@app.command()
def pretrain(
    data: list[Path] = typer.Option(..., "--data", help="Raw-count h5ad of unperturbed cells; repeat."),
    genes: Path = typer.Option(..., "--genes", help="HVG_DIR written by `cellsmith genes hvg`."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of PretrainConfig options."),
    out_dir: Path = typer.Option(..., "--out", help="PRETRAIN_DIR to write."),
    counts_layer: Optional[str] = COUNTS_LAYER,
    max_epochs: Optional[int] = MAX_EPOCHS,
    max_steps: Optional[int] = MAX_STEPS,
    accelerator: Optional[str] = ACCELERATOR,
    devices: Optional[str] = DEVICES,
    precision: Optional[str] = PRECISION,
    backed: bool = BACKED,
) -> None:
    """Learn one embedding per gene of the gene space from unperturbed cells."""
    from cellsmith.data import read
    from cellsmith.data.rows import read_backed
    from cellsmith.perturbation.config import PretrainConfig
    from cellsmith.perturbation.workflow import is_main_process, read_genespace, run_pretrain

    cfg = PretrainConfig.from_yaml(
        config, max_epochs=max_epochs, max_steps=max_steps, accelerator=accelerator, devices=devices,
        precision=precision,
    )
    space = read_genespace(genes)
    datasets = {
        name: (read_backed if backed else read)(path) for name, path in zip(_dataset_names(data), data, strict=True)
    }
    result = run_pretrain(datasets, space, out_dir, config=cfg, counts_layer=counts_layer)
    if not is_main_process():
        return
    out.print(
        f"gene embeddings of {len(space)} genes (digest {space.digest}); mapped per source: {result.mapped_per_source}"
    )
    out.print(f"written {out_dir}")


@app.command()
def finetune(
    data: Path = typer.Option(..., "--data", help="Raw-count h5ad of the perturbation screen."),
    perturbation_key: str = typer.Option(
        "target_gene", "--perturbation-key", help="obs column of perturbations (A, A+B, A_B, A+ctrl)."
    ),
    control_label: str = typer.Option("non-targeting", "--control-label", help="Label of control cells."),
    genes: Path = typer.Option(..., "--genes", help="HVG_DIR written by `cellsmith genes hvg`."),
    pretrained: Optional[Path] = typer.Option(
        None, "--pretrained", help="PRETRAIN_DIR (random gene embeddings without)."
    ),
    split: str = typer.Option(
        "heldout-perturbations", "--split", help="heldout-perturbations, heldout-combinations or heldout-cells."
    ),
    seed: int = typer.Option(0, "--seed"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of FinetuneConfig options."),
    context_key: Optional[str] = typer.Option(None, "--context-key", help="obs column of the control context."),
    out_dir: Path = typer.Option(..., "--out", help="MODEL_DIR to write."),
    counts_layer: Optional[str] = COUNTS_LAYER,
    max_epochs: Optional[int] = MAX_EPOCHS,
    max_steps: Optional[int] = MAX_STEPS,
    accelerator: Optional[str] = ACCELERATOR,
    devices: Optional[str] = DEVICES,
    precision: Optional[str] = PRECISION,
) -> None:
    """Fine-tune the control-set model on a screen; write the model, split, baselines, held-out cells."""
    from cellsmith.data import read
    from cellsmith.perturbation.config import FinetuneConfig
    from cellsmith.perturbation.pretrain import PretrainedGenes
    from cellsmith.perturbation.splits import SPLIT_MODES
    from cellsmith.perturbation.workflow import is_main_process, read_genespace, run_finetune

    if split not in SPLIT_MODES:
        raise InputError(f"--split takes {', '.join(SPLIT_MODES)}, not '{split}'.")
    cfg = FinetuneConfig.from_yaml(
        config, seed=seed, context_key=context_key, max_epochs=max_epochs, max_steps=max_steps, accelerator=accelerator,
        devices=devices, precision=precision,
    )
    space = read_genespace(genes)
    prior = PretrainedGenes.load(pretrained) if pretrained is not None else None
    _, parts = run_finetune(
        read(data), space, out_dir, config=cfg, pretrained=prior, split=split, perturbation_key=perturbation_key,
        control_label=control_label, counts_layer=counts_layer,
    )
    if not is_main_process():
        return
    out.print(
        f"split {parts.mode}: train perturbations {len(parts.train_targets)}, test perturbations "
        + ", ".join(f"{p} ({parts.categories.get(p, 'seen')})" for p in parts.test_targets)
    )
    out.print(
        f"written {out_dir} (predict from {out_dir / 'heldout_controls.h5ad'}, "
        f"evaluate against {out_dir / 'heldout_real.h5ad'})"
    )


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="MODEL_DIR of `cellsmith perturb finetune`."),
    controls: Path = typer.Option(..., "--controls", help="Raw-count h5ad of control cells."),
    targets: str = typer.Option(..., "--targets", help="PERTURBATION[,PERTURBATION...] to predict (GENE or A+B)."),
    cells_per_target: int = typer.Option(100, "--cells-per-target"),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(..., "--out", help="PRED.h5ad to write (cell-eval format)."),
    counts_layer: Optional[str] = typer.Option(
        None, "--counts-layer", help="Layer with raw counts of --controls (default: the model's; X: X)."
    ),
) -> None:
    """Predict perturbed cells of each target from control cells."""
    from cellsmith.data import read
    from cellsmith.perturbation.workflow import run_predict

    names = [t.strip() for t in targets.split(",") if t.strip()]
    pred = run_predict(
        model, read(controls), names, out_file, cells_per_target=cells_per_target, seed=seed, counts_layer=counts_layer
    )
    out.print(
        f"{pred.n_obs} cells ({len(names)} targets x {cells_per_target} + controls) x {pred.n_vars} genes "
        f"written to {out_file}"
    )


@app.command()
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="PRED.h5ad of `cellsmith perturb predict`."),
    real: Path = typer.Option(
        ..., "--real", help="Raw-count h5ad of the real cells (e.g. MODEL_DIR/heldout_real.h5ad)."
    ),
    baselines: bool = typer.Option(False, "--baselines", help="Also score the baselines of the model that predicted."),
    model: Optional[Path] = typer.Option(
        None, "--model", help="MODEL_DIR with the baselines (default: the one in PRED)."
    ),
    threads: int = typer.Option(1, "--threads", help="Threads of cell-eval's DE test."),
    out_dir: Path = typer.Option(..., "--out", help="DIR for per_perturbation.csv, summary.csv, report.html."),
    perturbation_key: Optional[str] = typer.Option(
        None, "--perturbation-key", help="obs column of target genes (default: the one PRED records)."
    ),
    counts_layer: Optional[str] = typer.Option(
        None, "--counts-layer", help="Layer with raw counts of --real (default: the one PRED records; X: X)."
    ),
    progress: bool = PROGRESS,
) -> None:
    """Score predictions (and baselines) with cell-eval; write tables and a report."""
    from cellsmith.data import read
    from cellsmith.perturbation.workflow import run_evaluate

    prediction = read(pred)
    source = model
    if baselines and source is None:
        source = prediction.uns.get("cellsmith", {}).get("perturbation", {}).get("model_dir")
        if source is None:
            raise InputError(f"{pred} does not name the model that made it; pass --model MODEL_DIR with --baselines.")
    with steps(progress) as step:
        step("scoring with cell-eval (differential expression per perturbation)")
        evaluation = run_evaluate(
            prediction, read(real), out_dir, baselines_from=source if baselines else None, num_threads=threads,
            perturbation_key=perturbation_key, counts_layer=counts_layer,
        )
    out.print(table_text(evaluation.summary), highlight=False)
    out.print(f"written {out_dir}")
