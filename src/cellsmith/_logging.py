"""The package logger and reproducibility helpers shared by every workflow."""

from __future__ import annotations

import logging
import random

import numpy as np

logger = logging.getLogger("cellsmith")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU) so that the same seed gives the same numbers."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
