"""``cellsmith deconvolve train | predict | evaluate``: thin wrappers around the API."""

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
    ORIENTATION,
    PRECISION,
    table_text,
)

app = typer.Typer(help="Bulk deconvolution: HP-VADE with an NNLS baseline.", no_args_is_help=True)
out = Console(soft_wrap=True)

UNKNOWN_MRNA = typer.Option(
    None, "--unknown-mrna", help="mRNA per cell of the cells the reference lacks, on the scale of "
    "--mrna-content (default 0.4, a typical cell, with immune): 0.13 suits neutrophils in whole blood. The "
    "unknown column is then a share of such cells.",
)
MRNA_CONTENT = typer.Option(
    None, "--mrna-content", metavar="immune|reference|FILE",
    help="mRNA per cell of each type in the bulk, which weights its cells: immune (measured values for "
    "immune type names; the default), reference (the reference's counts per cell: for pseudo-bulks of its "
    "own cells) or a .csv/.tsv/.yaml of cell type -> value. Default: the model's bulk_mrna_content.",
)


@app.command()
def train(
    reference: Path = typer.Option(..., "--reference", help="Labelled single-cell .h5ad with raw counts."),
    cell_type_key: str = typer.Option(..., "--cell-type-key", help="obs column with the cell types."),
    counts_layer: Optional[str] = typer.Option(None, "--counts-layer", help="Layer with raw counts (default X)."),
    genes_from: Optional[Path] = typer.Option(
        None, "--genes-from", help="A bulk file (.h5ad/.csv/.tsv): train only on the genes it has."
    ),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with DeconvolutionConfig options."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the config's seed (default 0)."),
    out_dir: Path = typer.Option(..., "--out", help="Model directory to write."),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="Show the progress bar (default: the config's progress_bar)."
    ),
    backed: bool = BACKED,
    max_epochs: Optional[int] = MAX_EPOCHS,
    max_steps: Optional[int] = MAX_STEPS,
    accelerator: Optional[str] = ACCELERATOR,
    devices: Optional[str] = DEVICES,
    precision: Optional[str] = PRECISION,
    orientation: str = ORIENTATION,
) -> None:
    """Train HP-VADE on pseudo-bulks of a labelled reference; write the model directory.

    Options of --config are overridden by the flags given.
    """
    from cellsmith.data import read, read_bulk
    from cellsmith.data.rows import read_backed
    from cellsmith.deconvolution.config import DeconvolutionConfig
    from cellsmith.deconvolution.model import Deconvolver

    options = DeconvolutionConfig.from_yaml(
        config,
        seed=seed,
        progress_bar=progress,
        max_epochs=max_epochs,
        max_steps=max_steps,
        accelerator=accelerator,
        devices=devices,
        precision=precision,
    )
    adata = read_backed(reference) if backed else read(reference)
    genes = list(read_bulk(genes_from, orientation).var_names) if genes_from is not None else None
    model = Deconvolver(options).train(adata, cell_type_key=cell_type_key, counts_layer=counts_layer, genes=genes)
    model.save(out_dir)
    if not model.is_global_zero:
        return
    validation = model.training.get("validation", {})
    for method, metrics in validation.items():
        out.print(
            f"validation {method}: r {metrics['pearson']:.4f}, CCC {metrics['ccc']:.4f}, "
            f"MAE {metrics['mae']:.4f}, RMSE {metrics['rmse']:.4f}"
        )
    out.print(
        f"model written to {out_dir} ({model.training.get('epochs_trained')} epochs, {len(model.genespace):,} genes)"
    )


@app.command()
def predict(
    model_dir: Path = typer.Option(..., "--model", help="Directory written by `deconvolve train`."),
    bulk: Path = typer.Option(..., "--bulk", help="Bulk samples: .h5ad (samples x genes) or .csv/.tsv."),
    out_path: Path = typer.Option(..., "--out", help="PROPS.csv; NNLS and fit go to PROPS.nnls.csv / PROPS.fit.csv."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer of the bulk .h5ad to use (default X)."),
    adapt: bool = typer.Option(
        False,
        "--adapt",
        help="Estimate gene-wise platform factors from these samples (one set, one platform) "
        "and correct for them, as `deconvolve run` does.",
    ),
    orientation: str = ORIENTATION,
    mrna_content: Optional[str] = MRNA_CONTENT,
    unknown_mrna: Optional[float] = UNKNOWN_MRNA,
) -> None:
    """Predict cell-type proportions of bulk samples (HP-VADE and NNLS, with fit quality)."""
    from cellsmith.data import read_bulk
    from cellsmith.deconvolution.content import content_setting
    from cellsmith.deconvolution.evaluate import FIT_SUFFIX, NNLS_SUFFIX, sibling
    from cellsmith.deconvolution.model import Deconvolver
    from cellsmith.report import write_atomic_files

    setting = content_setting(mrna_content)
    model = Deconvolver.load(model_dir)
    prediction = model.predict(
        read_bulk(bulk, orientation, genes=model.genespace.names), layer=layer, adapt=adapt, mrna_content=setting,
        unknown_mrna=unknown_mrna,
    )
    outputs = {
        out_path: prediction.proportions,
        sibling(out_path, NNLS_SUFFIX): prediction.nnls,
        sibling(out_path, FIT_SUFFIX): prediction.fit,
    }
    write_atomic_files(
        {path: lambda tmp, frame=frame: frame.to_csv(tmp, index_label="sample") for path, frame in outputs.items()}
    )
    poor = prediction.fit.index[prediction.fit["r2_log_hpvade"] < 0.8]
    out.print(
        f"{len(prediction.proportions)} samples; proportions written to {out_path} (NNLS: "
        f"{sibling(out_path, NNLS_SUFFIX).name}, fit: {sibling(out_path, FIT_SUFFIX).name})"
    )
    out.print(
        f"median fit R^2 (log space): HP-VADE {prediction.fit['r2_log_hpvade'].median():.3f}, "
        f"NNLS {prediction.fit['r2_log_nnls'].median():.3f}"
    )
    if len(poor):
        out.print(
            f"{len(poor)} samples are poorly explained by the reference (R^2 < 0.8, e.g. "
            f"{', '.join(map(str, poor[:3]))}): they hold expression the reference cannot produce "
            "(a cell type it lacks, or a different protocol than the single-cell reference's)."
        )


@app.command()
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="PROPS.csv from `deconvolve predict` (siblings read too)."),
    truth: Path = typer.Option(..., "--truth", help="Truth .csv (samples x types) or .h5ad with --truth-key."),
    truth_key: Optional[str] = typer.Option(None, "--truth-key", help="obsm key of the truth in an .h5ad."),
    map_file: Optional[Path] = typer.Option(None, "--map", help="YAML type mapping (see README)."),
    pair: list[str] = typer.Option([], "--pair", help="TRUTH[,TRUTH]=PRED[,PRED]: one compared type; repeat."),
    model_dir: Optional[Path] = typer.Option(None, "--model", help="Add this model's training curves."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for metrics CSVs, report.html and scatter.png."),
) -> None:
    """Compare predictions (HP-VADE and NNLS) with truth: tables, scatter plots, HTML report."""
    from cellsmith.deconvolution.evaluate import (
        compare,
        evaluation_report,
        read_mapping,
        read_predictions,
        read_truth,
    )
    from cellsmith.report import atomic_output_dir

    preds, fit = read_predictions(pred)
    comparison = compare(preds, read_truth(truth, truth_key), mapping=read_mapping(map_file, pair))
    model = None
    if model_dir is not None:
        from cellsmith.deconvolution.model import Deconvolver

        model = Deconvolver.load(model_dir)
    with atomic_output_dir(out_dir) as tmp:
        comparison.pooled.to_csv(tmp / "pooled_metrics.csv")
        comparison.per_type.to_csv(tmp / "per_type_metrics.csv")
        evaluation_report(
            comparison,
            fit=fit,
            training=model.training if model else None,
            history=model.history if model else None,
            save_png_dir=tmp,
        ).write(tmp / "report.html")
    for note in comparison.notes:
        out.print(note)
    out.print(table_text(comparison.pooled), highlight=False)
    out.print(f"report written to {out_dir / 'report.html'}")


@app.command("run")
def run_command(
    reference: Path = typer.Option(..., "--reference", help="Labelled single-cell .h5ad with raw counts."),
    cell_type_key: str = typer.Option(..., "--cell-type-key", help="obs column with the cell types."),
    bulk: Path = typer.Option(
        ...,
        "--bulk",
        help="Bulk samples: .h5ad (samples x genes) or .csv/.tsv; counts, "
        "CPM/TPM or linear microarray intensities (not log).",
    ),
    out_dir: Path = typer.Option(
        ..., "--out", help="Folder for proportions.csv, proportions.nnls.csv, fit.csv, report.html (written at once)."
    ),
    counts_layer: Optional[str] = typer.Option(None, "--counts-layer", help="Layer with raw counts (default X)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with DeconvolutionConfig options."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the config's seed (default 0)."),
    no_adapt: bool = typer.Option(
        False,
        "--no-adapt",
        help="No platform adaptation (the model as `predict` runs it); by default "
        "gene-wise platform factors are estimated from the bulk samples and the old model is the reference row.",
    ),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="Show the progress bar (default: the config's progress_bar)."
    ),
    max_epochs: Optional[int] = MAX_EPOCHS,
    accelerator: Optional[str] = ACCELERATOR,
    orientation: str = ORIENTATION,
    mrna_content: Optional[str] = MRNA_CONTENT,
    unknown_mrna: Optional[float] = UNKNOWN_MRNA,
) -> None:
    """Reference + bulk -> proportions in one step: train on the shared genes, adapt, predict.

    The bulk is one set measured on one platform (adaptation estimates gene-wise factors from
    all its samples together); NNLS and HP-VADE without adaptation are reported beside.
    """
    from cellsmith.data import read, read_bulk
    from cellsmith.deconvolution.config import DeconvolutionConfig
    from cellsmith.deconvolution.content import content_setting
    from cellsmith.deconvolution.run import PROPORTIONS, run, write_run
    from cellsmith.deconvolution.unknown import UNKNOWN_FLAG

    options = DeconvolutionConfig.from_yaml(
        config, seed=seed, progress_bar=progress, max_epochs=max_epochs, accelerator=accelerator,
        bulk_mrna_content=content_setting(mrna_content),
        unknown_mrna=unknown_mrna,
    )
    adata = read(reference)
    samples = read_bulk(bulk, orientation, genes=list(adata.var_names))
    result = run(
        adata, samples, cell_type_key=cell_type_key, config=options, counts_layer=counts_layer, adapt=not no_adapt
    )
    write_run(result, out_dir, bulk_name=bulk.name)
    table = result.tables()[PROPORTIONS]
    out.print(
        f"{len(table)} samples, {result.shared_genes:,} shared genes; proportions written to "
        f"{out_dir / PROPORTIONS} (report: {out_dir / 'report.html'})"
    )
    out.print(table.mean().round(3).to_frame("mean").T.to_string())
    fit = result.prediction.fit
    flagged = fit.index[fit["unknown_flag"]] if "unknown_flag" in fit else []
    if len(flagged):
        out.print(
            f"{len(flagged)} samples hold more than {UNKNOWN_FLAG:.0%} of content the reference lacks "
            f"(unknown), e.g. {', '.join(map(str, flagged[:3]))}."
        )
