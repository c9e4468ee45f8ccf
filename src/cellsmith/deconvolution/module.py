"""HP-VADE as a pure torch module: tensors in, tensors out, no AnnData.

Shapes: ``G`` genes, ``K`` cell types, ``B`` bulk samples, ``C`` cells, ``L`` latent dims.

- Signature ``S`` (G x K, CPM) is ``exp(log_signature)``: non-negative by construction and
  initialised from a given mean-CPM matrix; there is no random-initialisation path.
- Deconvolution network: ``proportions(bulk_cpm)`` = softmax(MLP(bulk_to_network(bulk_cpm))),
  the one bulk path used by training, validation and prediction.
- Single-cell VAE on log1p(CP10k) cells; the prototype of type k is the encoding of
  ``log1p(S_k / 100)``, and the decoder must give ``log1p(S_k / 100)`` back.
- Bulk reconstruction ``p @ S.T`` in CPM (optionally weighted by each type's mRNA content per
  cell and re-normalised to CPM), compared in log space: ``MSE(log1p(b_rec/100), log1p(b/100))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cellsmith.data import normalize
from cellsmith.nn import GaussianEncoder, LossOutput, kl_standard_normal, mlp

#: Floor added to the signature before the log, so genes with zero mean CPM stay finite.
SIGNATURE_FLOOR_CPM = 1e-3


@dataclass
class LossWeights:
    """Weights of the terms of :meth:`HPVADE.loss` (VAE reconstruction: ``vae_recon``)."""

    vae_recon: float = 1.0
    vae_kl: float = 0.01
    proto: float = 0.1
    bulk_recon: float = 10.0
    bulk_prop: float = 5.0
    prop_kl: float = 0.1

    def weighted(self, terms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each named term times its weight: the parts the total loss is the sum of."""
        return {name: getattr(self, name) * value for name, value in terms.items()}


class HPVADE(nn.Module):
    """Hybrid prototype VAE deconvolution.

    Parameters
    ----------
    signature_cpm
        ``(G, K)`` mean CPM of each cell type in the training cells: the initial ``S``.
    mrna_content
        ``(K,)`` relative mRNA content per cell of each type (mean counts per cell over the
        model's genes, divided by their mean), or None for the plain ``p @ S.T``. Proportions
        are fractions of cells, so a bulk's CPM is ``cpm((p * content) @ S.T)``: a type with
        twice the mRNA per cell contributes twice the reads per cell.
    n_latent, vae_hidden, deconv_hidden, dropout
        Sizes of the VAE and the deconvolution MLP.
    """

    def __init__(
        self,
        signature_cpm: torch.Tensor,
        *,
        mrna_content: torch.Tensor | None = None,
        n_latent: int = 32,
        vae_hidden: Sequence[int] = (256,),
        deconv_hidden: Sequence[int] = (512, 256),
        dropout: float = 0.1,
    ):
        super().__init__()
        if signature_cpm.ndim != 2 or bool((signature_cpm < 0).any()):
            raise ValueError("signature_cpm must be a non-negative (genes x cell types) matrix")
        n_genes, n_types = signature_cpm.shape
        self.log_signature = nn.Parameter((signature_cpm.float() + SIGNATURE_FLOOR_CPM).log())
        self.content_weighted = mrna_content is not None
        content = mrna_content.float() if mrna_content is not None else torch.ones(n_types)
        self.register_buffer("mrna_content", content)  # fixed: measured on the reference
        self.deconv = mlp(n_genes, deconv_hidden, n_types, dropout=dropout)
        self.encoder = GaussianEncoder(n_genes, n_latent, vae_hidden, dropout=dropout)
        self.decoder = mlp(n_latent, list(reversed(vae_hidden)), n_genes)

    @property
    def signature(self) -> torch.Tensor:
        """``S``: (G, K) CPM, non-negative."""
        return self.log_signature.exp()

    def proportion_logits(self, bulk_cpm: torch.Tensor) -> torch.Tensor:
        """(B, K) logits from (B, G) bulk CPM; the only place the bulk input is transformed."""
        return self.deconv(normalize.bulk_to_network(bulk_cpm))

    def proportions(self, bulk_cpm: torch.Tensor) -> torch.Tensor:
        """(B, K) proportions on the simplex for (B, G) bulk CPM."""
        return self.proportion_logits(bulk_cpm).softmax(-1)

    def reconstruct_bulk(self, proportions: torch.Tensor) -> torch.Tensor:
        """(B, G) CPM by linear mixing of the signature: ``p @ S.T``, or with mRNA content
        ``cpm((p * content) @ S.T)`` (cell fractions weighted into read fractions)."""
        if not self.content_weighted:
            return proportions @ self.signature.T
        return normalize.cpm((proportions * self.mrna_content) @ self.signature.T)

    def prototypes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, L) latent prototypes (encoder means of log1p(S_k / 100)) and (K, G) their targets."""
        target = normalize.bulk_to_network(self.signature.T)
        mu, _, _ = self.encoder(target)
        return mu, target

    def forward(self, bulk_cpm: torch.Tensor, cells_log: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything :meth:`loss` needs for a bulk batch and a cell batch (log1p CP10k)."""
        logits = self.proportion_logits(bulk_cpm)
        proportions = logits.softmax(-1)
        mu, log_var, z = self.encoder(cells_log)  # (C, L) each
        proto_mu, proto_target = self.prototypes()
        return {
            "logits": logits,
            "proportions": proportions,
            "bulk_rec": self.reconstruct_bulk(proportions),
            "cells_rec": self.decoder(z),
            "mu": mu,
            "log_var": log_var,
            "proto_mu": proto_mu,
            "proto_target": proto_target,
            "proto_rec": self.decoder(proto_mu),
        }

    def loss(
        self,
        out: dict[str, torch.Tensor],
        bulk_cpm: torch.Tensor,
        true_proportions: torch.Tensor,
        cells_log: torch.Tensor,
        cell_types: torch.Tensor,
        weights: LossWeights,
    ) -> LossOutput:
        """All loss terms for the outputs of :meth:`forward` (means over batch and genes).

        Returns
        -------
        LossOutput
            ``loss``: the weighted sum; ``terms``: ``vae_recon``, ``vae_kl``, ``proto``,
            ``bulk_recon`` and ``bulk_prop``, unweighted (``weights.weighted(terms)`` gives the
            parts of the sum).
        """
        vae_recon = F.mse_loss(out["cells_rec"], cells_log)
        vae_kl = kl_standard_normal(out["mu"], out["log_var"]).mean()
        proto = (out["mu"] - out["proto_mu"][cell_types]).pow(2).mean() + F.mse_loss(
            out["proto_rec"], out["proto_target"]
        )
        bulk_recon = F.mse_loss(normalize.bulk_to_network(out["bulk_rec"]), normalize.bulk_to_network(bulk_cpm))
        log_p = out["logits"].log_softmax(-1)
        kl_p = (torch.xlogy(true_proportions, true_proportions) - true_proportions * log_p).sum(-1).mean()
        bulk_prop = F.mse_loss(out["proportions"], true_proportions) + weights.prop_kl * kl_p
        terms = {
            "vae_recon": vae_recon,
            "vae_kl": vae_kl,
            "proto": proto,
            "bulk_recon": bulk_recon,
            "bulk_prop": bulk_prop,
        }
        return LossOutput(sum(weights.weighted(terms).values()), terms)
