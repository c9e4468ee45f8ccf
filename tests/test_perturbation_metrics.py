"""cell-eval through the metric registry, and the baseline-normalised score."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellsmith.errors import InputError
from cellsmith.metrics.perturbation import REGISTRY


def cells(shift_scale: float, seed: int) -> ad.AnnData:
    """Controls and 3 perturbations, each shifting its own 5 genes, log1p-like values."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["non-targeting", "P0", "P1", "P2"], 40)
    x = rng.gamma(4.0, 0.5, (labels.size, 30))
    for k in range(3):
        x[labels == f"P{k}", 5 * k : 5 * k + 5] += shift_scale
    obs = pd.DataFrame({"target_gene": pd.Categorical(labels)}, index=[f"c{i}" for i in range(labels.size)])
    return ad.AnnData(X=x.astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(30)]))


@pytest.fixture(scope="module")
def scored():
    real = cells(2.0, 0)
    cell_eval = REGISTRY.get("cell_eval")
    perfect = cell_eval(real, real)
    blind = cell_eval(cells(0.0, 1), real, real_de=perfect.real_de)
    return perfect, blind


def test_a_perfect_prediction_scores_perfectly(scored):
    perfect, _ = scored
    table = perfect.per_perturbation
    assert list(table.index) == ["P0", "P1", "P2"]
    np.testing.assert_allclose(table["mae"], 0.0, atol=1e-6)
    np.testing.assert_allclose(table["discrimination_score_l1"], 1.0)
    np.testing.assert_allclose(table["overlap_at_N"], 1.0)


def test_normalized_score_against_a_baseline(scored):
    perfect, blind = scored
    score = REGISTRY.get("normalized_score")
    assert (score(blind.aggregate, blind.aggregate) == 0).all()
    against_blind = score(perfect.aggregate, blind.aggregate)
    assert against_blind["mae"] == pytest.approx(1.0)
    assert 0 < against_blind["avg_score"] <= 1.0
    assert score(blind.aggregate, perfect.aggregate)["avg_score"] == 0.0  # clipped at 0


def test_mismatched_inputs_are_refused():
    real = cells(2.0, 0)
    fewer = real[real.obs["target_gene"] != "P2"].copy()
    with pytest.raises(InputError, match="same perturbations"):
        REGISTRY.get("cell_eval")(fewer, real)
    with pytest.raises(InputError, match="unknown perturbation metric"):
        REGISTRY.get("pds")
