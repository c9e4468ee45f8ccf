"""Typer options that several commands share: one flag name, one help text.

The training ones override the matching :class:`~cellsmith.nn.TrainingConfig` key of the
command's ``--config`` file (None: keep the config's value).
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import typer
from typer.core import TyperOption

MAX_EPOCHS = typer.Option(None, "--max-epochs", help="Override the config's max_epochs.")
MAX_STEPS = typer.Option(None, "--max-steps", help="Override the config's max_steps (-1: no limit).")
ACCELERATOR = typer.Option(None, "--accelerator", help="auto (default: a GPU when one is visible), cpu, gpu or mps.")
DEVICES = typer.Option(None, "--devices", help="Devices to train on: N or auto; more than 1 trains with DDP.")
PRECISION = typer.Option(None, "--precision", help="32 (default), bf16-mixed or 16-mixed (GPU).")

ORIENTATION = typer.Option(
    "auto",
    "--orientation",
    help="Bulk table layout: samples-by-genes, genes-by-samples or auto (decided from the model's genes, "
    "gene-like names, then shape; the evidence is logged).",
)


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
