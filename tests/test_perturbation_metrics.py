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


@pytest.mark.parametrize("n_targets, titles", [(1, ["only"]), (2, ["best", "worst"]), (5, ["best", "median", "worst"])])
def test_shift_figure_shows_each_held_out_target_once(n_targets, titles):
    """With 1 or 2 held-out targets the figure does not repeat a target across its panels."""
    import matplotlib

    matplotlib.use("Agg")
    from cellsmith.perturbation.evaluate import Evaluation, shift_figure

    rng = np.random.default_rng(0)
    targets = [f"T{i}" for i in range(n_targets)]
    real = pd.DataFrame(rng.normal(size=(n_targets, 30)), index=targets)
    predicted = real + rng.normal(scale=np.arange(1, n_targets + 1)[:, None], size=real.shape)
    evaluation = Evaluation(pd.DataFrame(), pd.DataFrame(), real, {"model": predicted})
    fig = shift_figure(evaluation)
    shown = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [title.split(":")[0] for title in shown] == titles
    assert len({title.split(":")[1].split(" (")[0] for title in shown}) == len(titles)
    assert shown[0].startswith(f"{titles[0]}: T0")  # the least noisy prediction ranks first
