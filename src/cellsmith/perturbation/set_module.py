"""The control-set response model: control cells + targets' embeddings -> perturbed cells.

Pure torch (no AnnData). A set of control cells of one context is encoded cell by cell and
pooled into a set code; each target's embedding and the set code give that target's
perturbation code; every control cell is shifted by a per-cell, per-gene amount read out
against the gene embeddings (so the shift of gene j depends on how gene j relates to the target
in embedding space, which is what lets an unseen target be predicted), plus a learnt common
shift and a learnt effect of each measured target on its own expression.

A combination is composed additively with a learnt interaction: the shifts of its targets are
summed, scaled by a learnt ``1 + combination_scale`` per extra target (doubles are on average
buffered or synergistic), and a pairwise term (a linear effect of the sum of the products of
every pair of target embeddings, zero for a single target) is added. A single target is
computed exactly as before combinations existed.

Targets are rows of a target table: the genes of the space first (whose embeddings also read
the shift out), then other genes of the pretraining vocabulary, then embeddings learned for
targets that have none. Trained with the energy distance between predicted and real perturbed
sets, plus an MSE on their means.
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


#: Padding of target index rows (a perturbation with fewer targets than the widest).
NO_TARGET = -1


class ControlSetResponse(nn.Module):
    """Predict a perturbed set from a control set and its targets' embeddings.

    Parameters
    ----------
    gene_embedding
        ``(G, E)`` embeddings of the gene space (pretrained, or random for the ablation).
    hidden
        Width of the cell, set and perturbation codes.
    freeze_embeddings
        Keep ``gene_embedding`` and ``vocabulary_embedding`` fixed.
    vocabulary_embedding
        ``(V, E)`` embeddings of further target genes (pretraining vocabulary outside the space).
    n_learned
        Targets with no embedding: rows learned in fine-tuning (always trainable).
    """

    def __init__(
        self, gene_embedding: torch.Tensor, hidden: int = 128, *, freeze_embeddings: bool = True,
        vocabulary_embedding: torch.Tensor | None = None, n_learned: int = 0,
    ):
        super().__init__()
        n_genes, n_embed = gene_embedding.shape
        extra = torch.zeros(0, n_embed) if vocabulary_embedding is None else vocabulary_embedding
        self.gene_embedding = nn.Parameter(gene_embedding.clone().float(), requires_grad=not freeze_embeddings)
        self.vocabulary_embedding = nn.Parameter(extra.clone().float(), requires_grad=not freeze_embeddings)
        self.learned_embedding = nn.Parameter(torch.randn(n_learned, n_embed))
        self.cell_encoder = mlp(n_genes, [hidden], hidden)
        self.pert_encoder = mlp(n_embed + hidden, [hidden], hidden)
        self.pair_effect = nn.Linear(n_embed, n_embed, bias=False)  # pairwise term of combinations
        nn.init.zeros_(self.pair_effect.weight)
        self.combination_scale = nn.Parameter(torch.zeros(()))
        self.cell_decoder = mlp(2 * hidden, [hidden], n_embed)
        self.direct = nn.Linear(n_embed, n_embed, bias=False)  # bilinear target-gene term
        nn.init.zeros_(self.direct.weight)
        self.gene_readout = nn.Linear(n_embed, n_embed, bias=False)
        self.common_shift = nn.Parameter(torch.zeros(n_genes))
        self.self_effect = nn.Parameter(torch.zeros(()))

    def embeddings(self) -> torch.Tensor:
        """Row-standardised target table (G + V + L, E), genes of the space first: pretrained,
        random and learned rows on one scale."""
        e = torch.cat([self.gene_embedding, self.vocabulary_embedding, self.learned_embedding])
        e = e - e.mean(-1, keepdim=True)
        return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-6) * math.sqrt(e.shape[1])

    def forward(self, controls: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """controls (B, S, G) log1p(CP10k); targets (B, K) rows of the target table, padded with
        :data:`NO_TARGET` (a (B,) tensor is one target each) -> predicted (B, S, G)."""
        targets = targets[:, None] if targets.dim() == 1 else targets
        table = self.embeddings()  # (T, E)
        n_genes = self.gene_embedding.shape[0]
        present = (targets != NO_TARGET).to(table)  # (B, K)
        e_k = table[targets.clamp_min(0)] * present[..., None]  # (B, K, E)
        e_sum = e_k.sum(1)  # (B, E)
        e_pair = (e_sum.pow(2) - e_k.pow(2).sum(1)) / 2  # (B, E): sum over pairs of products
        z = self.cell_encoder(controls)  # (B, S, H)
        n_targets, n_cells = e_k.shape[1], z.shape[1]
        z_k = z[:, None].expand(-1, n_targets, -1, -1)  # (B, K, S, H)
        code = self.pert_encoder(torch.cat([e_k, z.mean(1)[:, None].expand(-1, n_targets, -1)], -1))  # (B, K, H)
        # (B, K, S, E)
        per_target = self.cell_decoder(torch.cat([z_k, code[:, :, None].expand(-1, -1, n_cells, -1)], -1))
        per_target = per_target + self.direct(e_k)[:, :, None]  # (B, K, S, E)
        per_cell = (per_target * present[:, :, None, None]).sum(1)  # (B, S, E): sum of the targets' effects
        count = present.sum(1, keepdim=True)  # (B, 1)
        scale = 1.0 + self.combination_scale * (count - 1.0)  # (B, 1): 1 for a single target
        per_cell = scale[..., None] * per_cell + self.pair_effect(e_pair)[:, None]  # (B, S, E)
        emb = table[:n_genes]  # (G, E)
        readout = self.gene_readout(emb) / math.sqrt(emb.shape[1])  # (G, E)
        delta = per_cell @ readout.T + (scale * count)[..., None] * self.common_shift  # (B, S, G)
        measured = present * (targets < n_genes)  # (B, K): targets that are genes of the space
        own = torch.zeros_like(controls[:, 0]).scatter_add(1, targets.clamp(0, n_genes - 1), measured)  # (B, G)
        return torch.relu(controls + delta + own[:, None] * self.self_effect)

    def loss(
        self,
        controls: torch.Tensor,
        perturbed: torch.Tensor,
        target: torch.Tensor,
        observed: torch.Tensor,
        mean_weight: float,
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
