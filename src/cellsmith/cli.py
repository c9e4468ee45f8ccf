"""The ``cellsmith`` command line: parse, call the API, print, exit code.

User errors (:class:`~cellsmith.errors.CellsmithError`) are printed as ``error: <message>``
without a traceback, exit status 2; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

# cli_options: its import also sets the help metavars of every command
from cellsmith import _interrupt, cli_options
from cellsmith.deconvolution.cli import app as deconvolve_app
from cellsmith.errors import CellsmithError, InputError
from cellsmith.perturbation.cli import app as perturb_app
from cellsmith.retrieval.cli import retrieve_app
from cellsmith.scvi.cli import app as scvi_app

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
_state = {"verbose": False}


app = typer.Typer(
    name="cellsmith",
    help="Single-cell RNA-seq models that are correct by construction.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
genes_app = typer.Typer(help="Gene spaces shared across datasets.", no_args_is_help=True)
app.add_typer(genes_app, name="genes")
app.add_typer(retrieve_app, name="retrieve")
app.add_typer(perturb_app, name="perturb")
app.add_typer(scvi_app, name="scvi")
app.add_typer(deconvolve_app, name="deconvolve")


@app.callback()
def _configure(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging and tracebacks."),
) -> None:
    from cellsmith.report.html import recording_warnings

    _state["verbose"] = verbose
    ctx.with_resource(recording_warnings())  # the command's warnings also go into its report
    # On a terminal, rich's layout; in logs (CI, files) plain lines that never wrap or cut a path.
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(console=console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for noisy in ("lightning", "lightning.pytorch", "pytorch_lightning", "numba", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def audit(
    file: Path = typer.Argument(..., help="An .h5ad, 10x .h5 / matrix folder, or bulk .csv/.tsv."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Audit only this layer ('X', 'raw' or a layer name)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the audit as JSON here."),
    require: Optional[str] = typer.Option(
        None, "--require", help="'counts': exit 2 unless the matrix holds raw counts."
    ),
    orientation: str = cli_options.ORIENTATION,
) -> None:
    """Report the scale of X, every layer and .raw (counts / normalized / log1p / scaled)."""
    from cellsmith.data import audit as run_audit
    from cellsmith.data import read, require_counts

    if require not in (None, "counts"):
        raise InputError(f"--require takes 'counts', not '{require}'.")
    adata = read(file, orientation=orientation)
    report = run_audit(adata, layer=layer)
    out.print(str(report), highlight=False)
    if json_out is not None:
        report.write_json(json_out)
        console.print(f"audit written to {json_out}")
    if require == "counts":
        require_counts(adata, layer=layer)


def _parse_pairs(values: list[str], sep: str, option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        if sep not in value:
            raise InputError(f"{option} takes NAME{sep}VALUE, got '{value}'.")
        name, rest = value.split(sep, 1)
        pairs.append((name.strip(), rest.strip()))
    return pairs


@genes_app.command("hvg")
def genes_hvg(
    dataset: list[str] = typer.Option(..., "--dataset", help="NAME=PATH of a raw-count h5ad; repeat."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for cross_dataset_hvg_info.json."),
    n_top: int = typer.Option(2000, "--n-top", help="Number of genes in the space."),
    priority_genes_from: list[str] = typer.Option(
        [], "--priority-genes-from", help="NAME:OBS_COLUMN whose perturbed genes are kept first; repeat."
    ),
    control_label: str = typer.Option("non-targeting", "--control-label", help="Control label in those columns."),
    min_cell_fraction: float = typer.Option(1e-4, "--min-cell-fraction"),
    counts_layer: Optional[str] = typer.Option(None, "--counts-layer", help="Layer with raw counts (default X)."),
) -> None:
    """Select one HVG gene space across datasets and write its index maps."""
    from cellsmith.data import cross_dataset_hvg, perturbed_genes, read

    datasets = {name: read(path) for name, path in _parse_pairs(dataset, "=", "--dataset")}
    priority: list[str] = []
    for name, column in _parse_pairs(priority_genes_from, ":", "--priority-genes-from"):
        if name not in datasets:
            raise InputError(f"--priority-genes-from names dataset '{name}', not one of {list(datasets)}.")
        if column not in datasets[name].obs:
            raise InputError(
                f"dataset '{name}' has no obs column '{column}' (columns: {list(datasets[name].obs.columns)})."
            )
        priority += perturbed_genes(datasets[name].obs[column], control_label)
    selection = cross_dataset_hvg(
        datasets,
        n_top=n_top,
        priority_genes=priority,
        min_cell_fraction=min_cell_fraction,
        counts_layer=counts_layer,
    )
    path = selection.write(out_dir)
    params = selection.params
    for name, stats in selection.datasets.items():
        out.print(f"{name}: {stats['n_cells']:,} cells, {stats['n_genes']:,} genes, {stats['n_mapped']:,} mapped")
    out.print(f"intersection: {params['n_common_genes']:,} genes; after expression filter: {params['n_candidates']:,}")
    out.print(
        f"selected {len(selection.genespace):,} genes (digest {selection.genespace.digest}); priority genes "
        f"kept {len(selection.priority_genes_included)}/{len(params['priority_genes'])}"
        + (f", missing: {', '.join(selection.priority_genes_missing[:10])}" if selection.priority_genes_missing else "")
    )
    out.print(f"written {path}")


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo_output"), "--out", help="Folder for the demo report and files."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run every workflow on built-in simulated data and write one HTML report."""
    from cellsmith.demo import run_demo

    path = run_demo(out_dir, seed=seed)
    out.print(f"demo report written to {path.resolve()}")


def main() -> None:
    """Console-script entry point: user errors without traceback, exit status 2."""
    _interrupt.install()  # Ctrl-C and SIGTERM unwind and are never lost before outputs are moved
    # Typer handles usage errors itself (exit 2) and lets other exceptions through.
    try:
        app()
    except CellsmithError as err:
        if _state["verbose"]:
            console.print_exception()
        console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
