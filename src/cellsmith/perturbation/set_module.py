"""The control-set response model: control cells + target embedding -> perturbed cells.

Pure torch (no AnnData). A set of control cells of one context is encoded cell by cell and
pooled into a set code; the target gene's embedding and the set code give a perturbation
code; every control cell is shifted by a per-cell, per-gene amount read out against the gene
embeddings (so the shift of gene j depends on how gene j relates to the target in embedding
space, which is what lets an unseen target be predicted), plus a learnt common shift and a
learnt effect of a target on its own expression. Trained with the energy distance between
predicted and real perturbed sets, plus an MSE on their means.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cellsmith.nn import LossOutput, mlp


def energy_distance(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Energy distance ``2E|x-y| - E|x-x'| - E|y-y'|`` between sets, one value per set pair.

    x (B, S, G), y (B, T, G); ``weights`` (G,) scales genes (0 = ignored). Equal to twice
    ``geomloss.SamplesLoss("energy")``; written here to keep the loss readable.
    """
    if weights is not None:
        x, y = x * weights, y * weights

    def mean_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sq = (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2))
        return (sq.clamp_min(0.0) + 1e-8).sqrt().mean((-1, -2))  # (B,)

    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


class ControlSetResponse(nn.Module):
    """Predict a perturbed set from a control set and the target's gene embedding.

    Parameters
    ----------
    gene_embedding
        ``(G, E)`` embeddings of the gene space (pretrained, or random for the ablation).
    hidden
        Width of the cell, set and perturbation codes.
    freeze_embeddings
        Keep ``gene_embedding`` fixed.
    """

    def __init__(self, gene_embedding: torch.Tensor, hidden: int = 128, *, freeze_embeddings: bool = True):
        super().__init__()
        n_genes, n_embed = gene_embedding.shape
        self.gene_embedding = nn.Parameter(gene_embedding.clone().float(), requires_grad=not freeze_embeddings)
        self.cell_encoder = mlp(n_genes, [hidden], hidden)
        self.pert_encoder = mlp(n_embed + hidden, [hidden], hidden)
        self.cell_decoder = mlp(2 * hidden, [hidden], n_embed)
        self.direct = nn.Linear(n_embed, n_embed, bias=False)  # bilinear target-gene term
        nn.init.zeros_(self.direct.weight)
        self.gene_readout = nn.Linear(n_embed, n_embed, bias=False)
        self.common_shift = nn.Parameter(torch.zeros(n_genes))
        self.self_effect = nn.Parameter(torch.zeros(()))

    def embeddings(self) -> torch.Tensor:
        """Row-standardised gene embeddings (G, E): pretrained and random tables on one scale."""
        e = self.gene_embedding
        e = e - e.mean(-1, keepdim=True)
        return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-6) * math.sqrt(e.shape[1])

    def forward(self, controls: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """controls (B, S, G) log1p(CP10k); target (B,) gene index -> predicted (B, S, G)."""
        emb = self.embeddings()  # (G, E)
        e_t = emb[target]  # (B, E)
        z = self.cell_encoder(controls)  # (B, S, H)
        code = self.pert_encoder(torch.cat([e_t, z.mean(1)], -1))  # (B, H)
        per_cell = self.cell_decoder(torch.cat([z, code[:, None].expand_as(z)], -1))  # (B, S, E)
        readout = self.gene_readout(emb) / math.sqrt(emb.shape[1])  # (G, E)
        delta = (per_cell + self.direct(e_t)[:, None]) @ readout.T + self.common_shift  # (B, S, G)
        own = nn.functional.one_hot(target, emb.shape[0]).to(delta)[:, None] * self.self_effect  # (B, 1, G)
        return torch.relu(controls + delta + own)

    def loss(
        self, controls: torch.Tensor, perturbed: torch.Tensor, target: torch.Tensor,
        observed: torch.Tensor, mean_weight: float,
    ) -> LossOutput:
        """Energy distance + ``mean_weight`` x squared error of set means, over measured genes
        only. Terms: ``energy``, ``mean_mse`` (unweighted)."""
        predicted = self.forward(controls, target)
        weights = observed.to(predicted)
        energy = energy_distance(predicted, perturbed, weights).mean()
        # Summed over genes like the squared distances inside the energy term, so that the two
        # terms are on one scale whatever the number of genes.
        mean_mse = ((predicted.mean(1) - perturbed.mean(1)).pow(2) * weights).sum(-1).mean()
        return LossOutput(energy + mean_weight * mean_mse, {"energy": energy, "mean_mse": mean_mse})
