"""``cellsmith scvi``: train, reconstruct and predict (thin: parse, call the API, print)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cellsmith.cli_options import ACCELERATOR, BACKED, DEVICES, MAX_EPOCHS, MAX_STEPS, PRECISION, PROGRESS, steps
from cellsmith.errors import InputError

#: Read the h5ad block by block instead of loading it (data larger than memory).

app = typer.Typer(help="Conditional scVI: train, reconstruct, counterfactual predict.", no_args_is_help=True)
out = Console(soft_wrap=True)


def _read(path: Path, backed: bool):
    from cellsmith.data import read
    from cellsmith.data.rows import read_backed

    return read_backed(path) if backed else read(path)


def _parse_set(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, level = value.partition("=")
        if not sep or not key.strip() or not level.strip():
            raise InputError(f"--set takes KEY=VALUE (e.g. timepoint=24h), got '{value}'.")
        pairs[key.strip()] = level.strip()
    return pairs


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Raw-count .h5ad."),
    model_dir: Path = typer.Option(..., "--out", help="Folder of the trained model."),
    counts_layer: Optional[str] = typer.Option(None, "--counts-layer", help="Layer with raw counts (default X)."),
    batch_key: str = typer.Option("donor_id", "--batch-key", help="obs column of the batch (donor)."),
    no_batch: bool = typer.Option(False, "--no-batch", help="The data are one batch (ignore --batch-key)."),
    covariate_key: list[str] = typer.Option([], "--covariate-key", help="Categorical obs column; repeat."),
    perturbation_key: Optional[str] = typer.Option(None, "--perturbation-key", help="obs column of the perturbation."),
    control_label: Optional[str] = typer.Option(None, "--control-label", help="Control label of --perturbation-key."),
    match_key: Optional[str] = typer.Option(
        None, "--match-key", help="Also match controls on this obs column (e.g. cell_type)."
    ),
    likelihood: Optional[str] = typer.Option(None, "--likelihood", help="zinb (default) or nb."),
    no_zero_penalty: bool = typer.Option(
        False,
        "--no-zero-penalty",
        help="Switch off the always-zero gene treatment (the penalty and the -10 output-bias start), for the ablation.",
    ),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of SCVIConfig options."),
    max_epochs: Optional[int] = MAX_EPOCHS,
    max_steps: Optional[int] = MAX_STEPS,
    accelerator: Optional[str] = ACCELERATOR,
    devices: Optional[str] = DEVICES,
    precision: Optional[str] = PRECISION,
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the config's seed (default 0)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from MODEL_DIR/training/checkpoints/last.ckpt."),
    backed: bool = BACKED,
) -> None:
    """Train a conditional scVI on raw counts.

    The counts stay sparse in memory; with --backed only a buffer of row blocks is (shuffled row
    blocks, rows shuffled within the buffer; perturbation mode needs the data in memory). With
    --devices N > 1 Lightning starts N - 1 more processes that run this same command; only the
    first writes the model and prints.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    from cellsmith.report import write_atomic
    from cellsmith.scvi import ConditionalSCVI, SCVIConfig
    from cellsmith.scvi.figures import training_curves

    overrides = {
        "likelihood": likelihood,
        "max_epochs": max_epochs,
        "max_steps": max_steps,
        "accelerator": accelerator,
        "devices": devices,
        "precision": precision,
        "seed": seed,
    }
    if no_zero_penalty:
        overrides["zero_penalty"] = False
        overrides["zero_gene_init"] = False
    cfg = SCVIConfig.from_yaml(config, **overrides)
    adata = _read(data, backed)
    if not no_batch and batch_key not in adata.obs:
        raise InputError(
            f"{data} has no batch column '{batch_key}' (obs columns: {list(adata.obs.columns)[:15]}); pass "
            "--batch-key with the column of the donor or batch, or --no-batch when the cells are one batch."
        )
    model = ConditionalSCVI(cfg).train(
        adata,
        batch_key=None if no_batch else batch_key,
        covariate_keys=covariate_key,
        perturbation_key=perturbation_key,
        control_label=control_label,
        match_key=match_key,
        counts_layer=counts_layer,
        out_dir=model_dir / "training",
        resume=resume,
    )
    if not model.is_global_zero:  # an extra DDP process: the first one writes and reports
        return
    model.save(model_dir)
    if model.history is not None:
        figure = training_curves(model.history)
        write_atomic(model_dir / "training_curves.png", lambda tmp: figure.savefig(tmp, dpi=110, bbox_inches="tight"))
        plt.close(figure)
    last = model.history.iloc[-1] if model.history is not None else None
    summary = ""
    if last is not None:  # a run that --max-steps ends within its first epoch has no val_loss
        loss = f", val_loss {last['val_loss']:.4g}" if pd.notna(last.get("val_loss")) else ""
        summary = f" after {int(last['epoch']) + 1} epochs{loss}"
    out.print(f"model written to {model_dir}{summary}")


@app.command()
def reconstruct(
    model_dir: Path = typer.Option(..., "--model", help="Folder written by `cellsmith scvi train`."),
    data: Path = typer.Option(..., "--data", help="Raw-count .h5ad with the model's genes and keys."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for reconstructed.h5ad, metrics.json, PNGs, report.html."),
    kind: str = typer.Option(
        "mean", "--kind", help="mean: decoded means (default); sample: seeded draws from the model."
    ),
    seed: int = typer.Option(0, "--seed"),
    max_cells: int = typer.Option(
        20_000, "--max-cells", help="Compare a seeded subsample of at most this many cells (bounds memory and output)."
    ),
    backed: bool = BACKED,
    progress: bool = PROGRESS,
) -> None:
    """Reconstruct real cells and compare them with the real ones (UMAP + metrics).

    The comparison (and reconstructed.h5ad, dense) covers a seeded subsample of at most
    --max-cells cells; with --backed only those cells are read from the file.
    """
    from cellsmith.scvi import ConditionalSCVI
    from cellsmith.scvi.reconstruct import compare_reconstruction

    with steps(progress) as step:
        step(f"loading {model_dir} and {data}")
        model = ConditionalSCVI.load(model_dir)
        adata = _read(data, backed)
        result = compare_reconstruction(model, adata, seed=seed, kind=kind, max_cells=max_cells, step=step)
        step(f"writing {out_dir}")
        result.write(out_dir)
    overall = result.metrics.loc[("overall", "all")]
    out.print(
        f"kNN mixing {overall['knn_mixing']:.3f}, mean Pearson r {overall['mean_pearson']:.3f}, "
        f"energy distance {overall['energy_distance']:.3g} (real halves {overall['energy_distance_real_halves']:.3g}); "
        f"written to {out_dir}"
    )


@app.command()
def predict(
    model_dir: Path = typer.Option(..., "--model", help="Folder written by `cellsmith scvi train`."),
    data: Path = typer.Option(..., "--data", help="Raw-count .h5ad of the cells to predict from."),
    set_values: list[str] = typer.Option(..., "--set", help="KEY=VALUE covariate to swap; repeat."),
    out_path: Path = typer.Option(..., "--out", help="Output .h5ad of predicted cells."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampled counts layer."),
) -> None:
    """Counterfactual prediction: swap covariates, keep donor and latent state."""
    from cellsmith.data import read
    from cellsmith.report import write_atomic
    from cellsmith.scvi import ConditionalSCVI

    swaps = _parse_set(set_values)
    model = ConditionalSCVI.load(model_dir)
    pred = model.predict(read(data), set=swaps, seed=seed)
    write_atomic(out_path, pred.write_h5ad)
    out.print(
        f"{pred.n_obs:,} predicted cells ({', '.join(f'{k}={v}' for k, v in swaps.items())}) written to {out_path}"
    )
