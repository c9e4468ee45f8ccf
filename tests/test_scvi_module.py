"""The pure torch ConditionalVAE: shapes, loss terms, the always-zero penalty and its init."""

from __future__ import annotations

import pytest
import torch

from cellsmith.scvi.module import ConditionalVAE, zero_penalty_weight


def _batch(n=16, g=30):
    torch.manual_seed(0)
    x = torch.poisson(torch.rand(n, g) * 5)
    return x, x.log1p(), torch.ones(n, 2), torch.ones(n, 3), x.sum(1)


def test_penalty_weight_formula():
    assert zero_penalty_weight(5, 100) == 0.5
    assert zero_penalty_weight(20, 100) == pytest.approx(2.0)


def test_forward_shapes_and_loss_terms():
    x, x_log, enc, dec, lib = _batch()
    module = ConditionalVAE(30, 2, 3, n_latent=4, n_hidden=8, likelihood="zinb")
    out = module(x_log, enc, dec, lib)
    assert out["mu"].shape == (16, 30) and out["z"].shape == (16, 4) and out["theta"].shape == (30,)
    assert torch.allclose(out["mu"].sum(1), lib, rtol=1e-4)  # means sum to the library size
    result = module.loss(x, out, kl_weight=0.5)
    terms = result.terms
    assert set(terms) == {"reconstruction", "kl", "penalty"} and result.n_obs == 16
    assert torch.allclose(result.loss, terms["reconstruction"] + 0.5 * terms["kl"] + terms["penalty"])
    assert terms["penalty"] == 0  # no always-zero genes
    assert ConditionalVAE(30, 2, 3, likelihood="nb").zi_head is None


def test_penalty_is_the_documented_expression():
    module = ConditionalVAE(10, 0, 1, always_zero=[2, 5], zero_penalty=True)
    mu = torch.arange(20, dtype=torch.float32).reshape(2, 10)
    zero = mu[:, [2, 5]]
    expected = 2.0 * (zero.pow(2).mean(1) + 0.1 * zero.amax(1)).mean()  # w = max(0.5, 10 * 2 / 10)
    assert torch.allclose(module.penalty(mu), expected)
    assert ConditionalVAE(10, 0, 1, always_zero=[2, 5], zero_penalty=False).penalty(mu) == 0


def test_zero_gene_init_starts_always_zero_genes_near_zero():
    x, x_log, enc, dec, lib = _batch()
    torch.manual_seed(1)
    module = ConditionalVAE(30, 2, 3, always_zero=[0, 7], zero_gene_init=True).eval()
    mu = module(x_log, enc, dec, lib)["mu"]
    assert mu[:, [0, 7]].max() < 1e-3 * mu.mean()
