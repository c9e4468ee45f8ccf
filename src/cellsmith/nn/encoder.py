"""Gaussian encoder with the reparameterisation trick, and the KL terms of a VAE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cellsmith.nn.mlp import mlp


class GaussianEncoder(nn.Module):
    """x -> (mu, log_var, z): an MLP trunk with two linear heads.

    ``z`` is sampled with the reparameterisation trick in training mode and equals ``mu`` in
    eval mode, so inference is deterministic.
    """

    def __init__(self, n_in: int, n_latent: int, hidden: Sequence[int], *, dropout: float = 0.0):
        super().__init__()
        self.trunk = mlp(n_in, hidden, None, dropout=dropout)
        width = hidden[-1] if hidden else n_in
        self.mu = nn.Linear(width, n_latent)
        self.log_var = nn.Linear(width, n_latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.trunk(x)  # (batch, width)
        mu = self.mu(h)  # (batch, n_latent)
        log_var = self.log_var(h).clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp() if self.training else mu
        return mu, log_var, z


def kl_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, 1)) summed over latent dimensions, one value per row."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)


def kl_warmup_weight(epoch: int, warmup_epochs: int) -> float:
    """Linear KL warm-up from 0 to 1 over ``warmup_epochs`` (1 when warm-up is 0)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, epoch / warmup_epochs)
