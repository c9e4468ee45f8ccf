"""Multi-layer perceptrons used as encoders, decoders and heads."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(
    n_in: int,
    hidden: Sequence[int],
    n_out: int | None = None,
    *,
    dropout: float = 0.0,
    layer_norm: bool = True,
    activation: type[nn.Module] = nn.GELU,
) -> nn.Sequential:
    """Linear -> (LayerNorm) -> activation -> (Dropout) per hidden width, then an optional
    linear output layer of width ``n_out`` (no activation on it)."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(activation())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    if n_out is not None:
        layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)
