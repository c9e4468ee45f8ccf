"""Count likelihoods of single-cell models: negative binomial and zero-inflated NB.

Both are parameterised by the mean ``mu`` (counts, > 0) and the inverse dispersion ``theta``
(> 0), so that ``Var = mu + mu^2 / theta``; the ZINB adds the logit of a zero-inflation
probability. Every function returns the log-likelihood of each entry (same shape as ``x``);
callers sum over genes and average over cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def log_nb(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """log NB(x | mu, theta), element-wise.

    ``theta`` broadcasts against ``x`` (e.g. one value per gene).
    """
    log_theta_mu = torch.log(theta + mu + _EPS)
    return (
        theta * (torch.log(theta + _EPS) - log_theta_mu)
        + x * (torch.log(mu + _EPS) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )


def log_zinb(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor
) -> torch.Tensor:
    """log ZINB(x | mu, theta, pi = sigmoid(zi_logits)), element-wise.

    With ``pi = e^l / (1 + e^l)``: ``P(0) = (e^l + NB(0)) / (1 + e^l)`` and, for ``x > 0``,
    ``P(x) = NB(x) / (1 + e^l)``; both are evaluated in log space for stability.
    """
    log_norm = F.softplus(zi_logits)  # log(1 + e^l)
    log_nb_x = log_nb(x, mu, theta)
    log_nb_zero = theta * (torch.log(theta + _EPS) - torch.log(theta + mu + _EPS))
    at_zero = torch.logaddexp(zi_logits, log_nb_zero) - log_norm
    return torch.where(x < 0.5, at_zero, log_nb_x - log_norm)


def zero_probability(
    mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor | None = None
) -> torch.Tensor:
    """P(x = 0) under the NB (``zi_logits`` None) or the ZINB, element-wise."""
    log_p0 = theta * (torch.log(theta + _EPS) - torch.log(theta + mu + _EPS))
    if zi_logits is None:
        return log_p0.exp()
    return (torch.logaddexp(zi_logits, log_p0) - F.softplus(zi_logits)).exp()
