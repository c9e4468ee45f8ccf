"""The conditional VAE of scVI as a pure torch module (tensors in, tensors out; no AnnData).

Shapes: ``B`` cells in a batch, ``G`` genes, ``L`` latent dimensions, ``E`` / ``D`` the widths
of the one-hot covariate blocks given to the encoder / decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cellsmith.nn import GaussianEncoder, LossOutput, kl_standard_normal, log_nb, log_zinb, mlp, zero_probability

#: Initial output bias of always-zero genes (softmax share ~e^-10 of a typical gene's).
ZERO_GENE_BIAS = -10.0


def zero_penalty_weight(n_always_zero: int, n_genes: int) -> float:
    """``w = max(0.5, 10 * n_always_zero / n_genes)``: more always-zero genes, stronger push."""
    return max(0.5, 10.0 * n_always_zero / n_genes)


class ConditionalVAE(nn.Module):
    """scVI: ``x -> z -> (mu, theta, pi)`` with one-hot covariates injected into both halves.

    Parameters
    ----------
    n_genes
        Genes ``G``.
    n_encoder_covariates, n_decoder_covariates
        Widths ``E`` and ``D`` of the one-hot covariate blocks (0 for none).
    always_zero
        Indices of the genes with zero counts in every training cell.
    zero_penalty
        Add the always-zero penalty to the loss.
    zero_gene_init
        Initialise the output bias of the always-zero genes at ``ZERO_GENE_BIAS``.
    n_latent, n_hidden, n_layers, dropout, likelihood
        Architecture (see :class:`~cellsmith.scvi.config.SCVIConfig`).
    """

    def __init__(
        self,
        n_genes: int,
        n_encoder_covariates: int,
        n_decoder_covariates: int,
        *,
        always_zero: Sequence[int] = (),
        zero_penalty: bool = True,
        zero_gene_init: bool = False,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout: float = 0.1,
        likelihood: str = "zinb",
    ):
        super().__init__()
        hidden = [n_hidden] * n_layers
        self.likelihood = likelihood
        self.encoder = GaussianEncoder(n_genes + n_encoder_covariates, n_latent, hidden, dropout=dropout)
        self.decoder = mlp(n_latent + n_decoder_covariates, hidden, None)
        self.scale_head = nn.Linear(n_hidden, n_genes)
        self.zi_head = nn.Linear(n_hidden, n_genes) if likelihood == "zinb" else None
        self.log_theta = nn.Parameter(torch.zeros(n_genes))  # one inverse dispersion per gene
        self.register_buffer("always_zero", torch.as_tensor(list(always_zero), dtype=torch.long))
        if zero_gene_init and len(always_zero):
            with torch.no_grad():
                self.scale_head.bias[self.always_zero] = ZERO_GENE_BIAS
        self.penalty_weight = zero_penalty_weight(len(always_zero), n_genes) if zero_penalty else 0.0

    def encode(
        self, x_log: torch.Tensor, covariates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, G) log-normalised counts and (B, E) one-hots -> (mu, log_var, z), each (B, L)."""
        return self.encoder(torch.cat([x_log, covariates], dim=1))

    def decode(
        self, z: torch.Tensor, covariates: torch.Tensor, library: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        """(B, L) latent, (B, D) one-hots and (B,) library sizes -> NB / ZINB parameters.

        ``mu`` (B, G) is the expected count, ``library * softmax(...)``; ``theta`` (G,) the
        inverse dispersion; ``zi_logits`` (B, G) the zero-inflation logits (None for ``nb``).
        """
        h = self.decoder(torch.cat([z, covariates], dim=1))  # (B, n_hidden)
        mu = library[:, None] * torch.softmax(self.scale_head(h), dim=1)
        zi_logits = self.zi_head(h) if self.zi_head is not None else None
        return {"mu": mu, "theta": self.log_theta.exp(), "zi_logits": zi_logits}

    def forward(
        self,
        x_log: torch.Tensor,
        encoder_covariates: torch.Tensor,
        decoder_covariates: torch.Tensor,
        library: torch.Tensor,
    ) -> dict[str, torch.Tensor | None]:
        """Encode source cells, decode them under ``decoder_covariates`` at ``library`` size."""
        z_mu, z_log_var, z = self.encode(x_log, encoder_covariates)
        out = self.decode(z, decoder_covariates, library)
        out.update(z_mu=z_mu, z_log_var=z_log_var, z=z)
        return out

    def log_likelihood(self, x: torch.Tensor, out: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """(B, G) counts -> (B,) log-likelihood of each cell under the decoded distribution."""
        if out["zi_logits"] is None:
            return log_nb(x, out["mu"], out["theta"]).sum(1)
        return log_zinb(x, out["mu"], out["theta"], out["zi_logits"]).sum(1)

    def zero_probability(self, out: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """(B, G) probability of a zero count under the decoded distribution."""
        return zero_probability(out["mu"], out["theta"], out["zi_logits"])

    def penalty(self, mu: torch.Tensor) -> torch.Tensor:
        """``w * (mean_g mu^2 + 0.1 * max_g mu)`` over always-zero genes, averaged over cells."""
        if self.penalty_weight == 0.0 or self.always_zero.numel() == 0:
            return mu.new_zeros(())
        mu_zero = mu[:, self.always_zero]  # (B, n_always_zero)
        per_cell = mu_zero.pow(2).mean(1) + 0.1 * mu_zero.amax(1)
        return self.penalty_weight * per_cell.mean()

    def loss(
        self, x: torch.Tensor, out: dict[str, torch.Tensor | None], *, kl_weight: float = 1.0
    ) -> LossOutput:
        """The objective for target counts ``x`` (B, G) given :meth:`forward`'s output.

        Returns
        -------
        LossOutput
            ``loss = reconstruction + kl_weight * kl + penalty`` and the unweighted terms, each a
            scalar averaged over the B cells: ``reconstruction`` the negative log-likelihood of
            the counts summed over genes, ``kl`` KL(q(z | x) || N(0, I)) summed over latent
            dimensions, ``penalty`` the always-zero gene penalty (0 when off or when there are none).
        """
        reconstruction = -self.log_likelihood(x, out).mean()
        kl = kl_standard_normal(out["z_mu"], out["z_log_var"]).mean()
        penalty = self.penalty(out["mu"])
        return LossOutput(
            reconstruction + kl_weight * kl + penalty,
            {"reconstruction": reconstruction, "kl": kl, "penalty": penalty},
            n_obs=x.shape[0],
        )
