"""Typer options that several commands share: one flag name, one help text.

The training ones override the matching :class:`~cellsmith.nn.TrainingConfig` key of the
command's ``--config`` file (None: keep the config's value).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

import pandas as pd
import typer
from rich.console import Console
from typer.core import TyperOption

from cellsmith._logging import logger

MAX_EPOCHS = typer.Option(None, "--max-epochs", help="Override the config's max_epochs.")
MAX_STEPS = typer.Option(None, "--max-steps", help="Override the config's max_steps (-1: no limit).")
ACCELERATOR = typer.Option(None, "--accelerator", help="auto (default: a GPU when one is visible), cpu, gpu or mps.")
DEVICES = typer.Option(None, "--devices", help="Devices to train on: N or auto; more than 1 trains with DDP.")
PRECISION = typer.Option(None, "--precision", help="32 (default), bf16-mixed or 16-mixed (GPU).")

PROGRESS = typer.Option(
    True, "--progress/--no-progress", help="Show what a long step is doing (only on a terminal: never in CI logs)."
)

ORIENTATION = typer.Option(
    "auto",
    "--orientation",
    help="Bulk table layout: samples-by-genes, genes-by-samples or auto (decided from the model's genes, "
    "gene-like names, then shape; the evidence is logged).",
)


@contextmanager
def steps(enabled: bool) -> Iterator[Callable[[str], None]]:
    """``step(message)`` callbacks for a long command: a spinner on stderr naming the current step
    when ``enabled`` and stderr is a terminal; debug log lines otherwise (CI logs stay quiet)."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda message: logger.debug(message)
        return
    with Console(stderr=True).status("starting") as status:
        yield lambda message: status.update(message)


def _value_metavar(self: TyperOption, ctx: typer.Context) -> str | None:
    """The help's value column: nothing for flags, ``<path> (repeat)`` for repeatable options.

    Typer 0.29 prints the Python annotation there (``<bool>`` after flags that take no value,
    ``<list[Path]>`` after repeatable options); this replaces it for every command at once.
    """
    if self.metavar is not None:
        return self.metavar
    if self.is_flag:
        return None
    if self.type_descriptor.is_list:
        (element,) = get_args(self.type_descriptor.annotation)
        name = "path" if element is Path else self._bare_type(element)
        return f"<{name}> (repeat)"
    return _typer_value_metavar(self, ctx)


_typer_value_metavar = TyperOption.display_type_rich
TyperOption.display_type_rich = _value_metavar


def table_text(frame: pd.DataFrame, digits: int = 4) -> str:
    """A table as plain text for the terminal: whole-number columns (counts) as integers, other
    numbers rounded to ``digits`` decimals.

    Tables built row by row (``DataFrame(dicts).T``) hold counts as floats (``n 8.0``).
    """
    shown = frame.copy()
    for column in shown.columns:
        values = shown[column]
        if pd.api.types.is_float_dtype(values) and values.notna().any() and (values.dropna() % 1 == 0).all():
            shown[column] = values.astype("Int64")
        elif pd.api.types.is_float_dtype(values):
            shown[column] = values.round(digits)
    return shown.to_string()
BACKED = typer.Option(
    False,
    "--backed",
    help="Read the input .h5ad's counts (X, CSR) from disk by row blocks (anndata's backed mode) instead of "
    "loading them: for data larger than memory; results equal the in-memory ones up to the shuffling order.",
)
