"""NB / ZINB log-likelihoods against torch.distributions, and P(zero)."""

from __future__ import annotations

import torch
from torch.distributions import NegativeBinomial

from cellsmith.nn import log_nb, log_zinb, zero_probability


def _reference_nb(x, mu, theta):
    # torch's NB counts failures with success probability p: mean = theta * p / (1 - p).
    return NegativeBinomial(total_count=theta, logits=torch.log(mu / theta)).log_prob(x)


def test_log_nb_matches_torch_distribution():
    torch.manual_seed(0)
    x = torch.poisson(torch.rand(40, 25) * 4)
    mu, theta = torch.rand(40, 25) * 5 + 0.05, torch.rand(25) * 8 + 0.2
    assert torch.allclose(log_nb(x, mu, theta), _reference_nb(x, mu, theta), atol=1e-4)


def test_log_zinb_mixes_point_mass_and_nb():
    torch.manual_seed(1)
    x = torch.poisson(torch.rand(40, 25) * 2)
    mu, theta, logits = torch.rand(40, 25) * 3 + 0.05, torch.rand(25) * 5 + 0.5, torch.randn(40, 25)
    pi, nb = torch.sigmoid(logits), _reference_nb(x, mu, theta)
    expected = torch.where(x == 0, torch.log(pi + (1 - pi) * nb.exp()), torch.log(1 - pi) + nb)
    assert torch.allclose(log_zinb(x, mu, theta, logits), expected, atol=1e-4)
    # very negative logits: no zero inflation, the NB itself
    assert torch.allclose(log_zinb(x, mu, theta, torch.full_like(mu, -30.0)), nb, atol=1e-4)


def test_zero_probability_is_the_likelihood_of_zero():
    mu, theta, logits = torch.tensor([[0.5, 3.0]]), torch.tensor([2.0, 0.7]), torch.tensor([[0.3, -1.0]])
    zeros = torch.zeros(1, 2)
    assert torch.allclose(zero_probability(mu, theta), log_nb(zeros, mu, theta).exp())
    assert torch.allclose(zero_probability(mu, theta, logits), log_zinb(zeros, mu, theta, logits).exp())
