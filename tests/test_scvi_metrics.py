"""Reconstruction metrics: known answers on constructed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from cellsmith.errors import InputError
from cellsmith.metrics.reconstruction import (
    REGISTRY,
    always_zero_mean,
    energy_distance,
    knn_mixing,
    mean_pearson,
    metrics_by_group,
    real_halves_energy_distance,
    zero_fraction_agreement,
)

rng = np.random.default_rng(0)


def test_knn_mixing_is_one_for_same_distribution_and_zero_for_separate():
    real, recon = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    is_real = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    assert knn_mixing(np.vstack([real, recon]), is_real) > 0.85
    assert knn_mixing(np.vstack([real, recon + 50.0]), is_real) == 0.0


def test_energy_distance_vs_real_halves():
    a, b = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    same, shifted = energy_distance(a, b), energy_distance(a, b + 3.0)
    assert abs(same) < 0.1 < shifted
    assert abs(real_halves_energy_distance(a)) < 0.1


def test_means_zero_fractions_and_always_zero():
    counts = rng.poisson(rng.uniform(0.1, 5, 50), size=(200, 50)).astype(float)
    log = np.log1p(counts)
    assert mean_pearson(log, log) == pytest.approx(1.0)
    observed_zero = (counts == 0).astype(float)
    assert zero_fraction_agreement(observed_zero, counts) == pytest.approx(1.0)
    assert zero_fraction_agreement(1 - observed_zero, counts) < 1.0
    mask = np.zeros(50, bool)
    mask[:5] = True
    assert always_zero_mean(np.where(mask, 0.2, 9.0) * np.ones((200, 1)), mask) == pytest.approx(0.2)


def test_metrics_by_group_has_overall_and_every_level():
    n, g = 120, 20
    counts = rng.poisson(2.0, size=(n, g)).astype(float)
    frame = metrics_by_group(
        {"donor": np.repeat(["a", "b", "c"], n // 3)},
        real_log=np.log1p(counts),
        pred_log=np.log1p(counts),
        real_counts=counts,
        pred_counts=counts,
        zero_probability=(counts == 0).astype(float),
        embedding_real=np.log1p(counts)[:, :5],
        embedding_pred=np.log1p(counts)[:, :5] + 0.01,
        always_zero=np.zeros(g, bool),
    )
    assert list(frame.index) == [("overall", "all"), ("donor", "a"), ("donor", "b"), ("donor", "c")]
    assert frame.loc[("donor", "b"), "n_cells"] == n / 3
    assert (frame["mean_pearson"] > 0.999).all()


def test_registry_names_the_metrics():
    assert REGISTRY.get("knn_mixing") is knn_mixing
    with pytest.raises(InputError, match="knn_mixing"):
        REGISTRY.get("nope")
