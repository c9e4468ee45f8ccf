"""Typer options that several commands share: one flag name, one help text.

The training ones override the matching :class:`~cellsmith.nn.TrainingConfig` key of the
command's ``--config`` file (None: keep the config's value).
"""

from __future__ import annotations

import typer

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
