"""The tiny HP-VADE options, reference and CLI runner the deconvolution tests share.

Imported by the test modules (pytest puts ``tests/`` on the path); YAML configs for CLI tests
are written from the same options, so every test trains the same small network (seconds on a CPU).
"""

from collections.abc import Sequence
from pathlib import Path

import yaml

from cellsmith.data import simulate

TINY = {
    "n_marker_genes": None, "n_train_samples": 256, "n_val_samples": 64, "cells_per_sample": 100,
    "max_epochs": 2, "patience": 0, "batch_size": 64, "deconv_hidden": [32], "vae_hidden": [32], "n_latent": 8,
}


def tiny_reference(cell_types: Sequence[str] = ("A", "B", "C")):
    """400 simulated cells x 120 genes of ``cell_types`` (one donor, seed 0)."""
    return simulate.singlecell(400, 120, cell_types=tuple(cell_types), donors=1, seed=0)


def write_tiny_inputs(root: Path, n_bulk: int):
    """``root/ref.h5ad`` (:func:`tiny_reference`) and ``root/config.yaml`` (:data:`TINY`); returns
    the reference and ``n_bulk`` pseudo-bulks of it (100 cells each, seed 5) for the test to write."""
    reference = tiny_reference()
    reference.write_h5ad(root / "ref.h5ad")
    write_tiny_config(root / "config.yaml")
    return reference, simulate.bulk(reference, n_bulk, cells_per_sample=100, seed=5)


def invoke_deconvolve(*args):
    """``cellsmith deconvolve ARGS`` in this process (no start-up cost); the click result."""
    from typer.testing import CliRunner

    from cellsmith.cli import app

    return CliRunner().invoke(app, ["deconvolve", *map(str, args)])


def write_tiny_config(path: Path, **overrides) -> Path:
    """A YAML config of :data:`TINY` with ``overrides``; returns ``path``."""
    path.write_text(yaml.safe_dump({**TINY, **overrides}))
    return path
