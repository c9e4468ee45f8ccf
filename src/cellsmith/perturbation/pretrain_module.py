"""Masked-expression autoencoder whose only gene parameters are one embedding per gene.

Pure torch (no AnnData). Cells are standardised per gene; a random share of measured genes is
hidden; the cell code is the embedding-weighted sum of the visible genes passed through an
MLP, and every gene is read back as the dot product of the code with that gene's embedding.
With the same embedding table on both sides, genes that co-vary get similar embeddings,
which is what fine-tuning uses to predict the response to an unseen target.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cellsmith.data.normalize import standardize
from cellsmith.nn import LossOutput, mlp

#: Weight of the visible genes' reconstruction error beside the hidden genes'.
VISIBLE_WEIGHT = 0.1


class GeneEmbeddingAE(nn.Module):
    """Masked-expression model with a gene-embedding table ``(n_genes, n_embed)``."""

    def __init__(
        self,
        n_genes: int,
        n_embed: int,
        hidden: list[int],
        *,
        gene_mean: torch.Tensor | None = None,
        gene_sd: torch.Tensor | None = None,
    ):
        super().__init__()
        self.gene_embedding = nn.Parameter(torch.randn(n_genes, n_embed) / math.sqrt(n_embed))
        self.encoder = mlp(n_embed, hidden, n_embed)
        self.gene_bias = nn.Parameter(torch.zeros(n_genes))
        self.register_buffer("gene_mean", torch.zeros(n_genes) if gene_mean is None else gene_mean)
        self.register_buffer("gene_sd", torch.ones(n_genes) if gene_sd is None else gene_sd)

    def forward(self, x: torch.Tensor, visible: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, G) log1p(CP10k); visible (B, G) bool -> standardised reconstruction (B, G)."""
        standardized = standardize(x, self.gene_mean, self.gene_sd)
        z = standardized * visible  # (B, G), hidden genes read as 0
        n_visible = visible.sum(-1, keepdim=True).clamp_min(1.0)
        pooled = z @ self.gene_embedding / n_visible.sqrt()  # (B, E)
        code = self.encoder(pooled)  # (B, E)
        recon = code @ self.gene_embedding.T + self.gene_bias  # (B, G)
        return {"recon": recon, "standardized": standardized}

    def loss(self, x: torch.Tensor, observed: torch.Tensor, mask_fraction: float) -> LossOutput:
        """MSE on the hidden (and, with weight :data:`VISIBLE_WEIGHT`, the visible) measured
        genes; genes a source does not measure are in neither. Terms: ``masked_mse``,
        ``visible_mse`` (unweighted)."""
        hidden = (torch.rand_like(x) < mask_fraction) & observed
        visible = observed & ~hidden
        out = self.forward(x, visible.float())
        err = (out["recon"] - out["standardized"]).pow(2)
        masked_mse = (err * hidden).sum() / hidden.sum().clamp_min(1)
        visible_mse = (err * visible).sum() / visible.sum().clamp_min(1)
        return LossOutput(
            masked_mse + VISIBLE_WEIGHT * visible_mse, {"masked_mse": masked_mse, "visible_mse": visible_mse}
        )
