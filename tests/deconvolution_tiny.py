"""The tiny HP-VADE options the deconvolution tests train with (seconds on a CPU).

Imported by the test modules (pytest puts ``tests/`` on the path); YAML configs for CLI tests
are written from the same options, so every test trains the same small network.
"""

from pathlib import Path

import yaml

TINY = {
    "n_marker_genes": None, "n_train_samples": 256, "n_val_samples": 64, "cells_per_sample": 100,
    "max_epochs": 2, "patience": 0, "batch_size": 64, "deconv_hidden": [32], "vae_hidden": [32], "n_latent": 8,
}


def write_tiny_config(path: Path, **overrides) -> Path:
    """A YAML config of :data:`TINY` with ``overrides``; returns ``path``."""
    path.write_text(yaml.safe_dump({**TINY, **overrides}))
    return path
