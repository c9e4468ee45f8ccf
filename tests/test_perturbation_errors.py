"""Bad input is a clear CellsmithError and nothing is written; baselines and losses on
hand-made examples."""

import logging

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellsmith.data import GeneSpace, simulate
from cellsmith.errors import CellsmithDeprecationWarning, ConfigError, GeneSpaceError, InputError
from cellsmith.perturbation import Baselines, FinetuneConfig, PerturbationModel, prepare_screen
from cellsmith.perturbation.set_module import energy_distance
from cellsmith.perturbation.workflow import run_finetune

FAST = dict(max_epochs=1, steps_per_epoch=2, batch_size=2, set_size=8, hidden=8, n_embed=4, progress_bar=False)


@pytest.fixture(scope="module")
def screen():
    return simulate.singlecell(600, 80, cell_types=1, donors=2, perturbations=4, control_fraction=0.4, seed=2)


@pytest.fixture(scope="module")
def space(screen):
    return GeneSpace(screen.var_names)


def test_no_control_cells(screen, space, tmp_path):
    with pytest.raises(InputError, match="no control cells"):
        run_finetune(screen, space, tmp_path / "m", config=FinetuneConfig(**FAST), control_label="ctrl")
    assert not (tmp_path / "m").exists()


def test_unknown_keys(screen, space, tmp_path):
    with pytest.raises(InputError, match="'guide'.*columns"):
        run_finetune(screen, space, tmp_path / "m", config=FinetuneConfig(**FAST), perturbation_key="guide")
    with pytest.raises(InputError, match="context key 'batch'"):
        run_finetune(screen, space, tmp_path / "m", config=FinetuneConfig(**FAST, context_key="batch"))
    with pytest.raises(ConfigError, match="set_sise"):
        FinetuneConfig.from_yaml(None, set_sise=4)
    with pytest.raises(InputError, match="unknown split"):
        run_finetune(screen, space, tmp_path / "m", config=FinetuneConfig(**FAST), split="random")
    assert not (tmp_path / "m").exists()


def test_target_absent_from_the_gene_space(screen, space, tmp_path, caplog):
    targets = sorted(set(screen.obs["target_gene"].astype(str)) - {"non-targeting"})
    smaller = GeneSpace([g for g in space.names if g != targets[0]])
    with pytest.raises(InputError, match=f"no gene embedding .*: {targets[0]}"):
        prepare_screen(screen, smaller, missing_targets="error")
    dropped = prepare_screen(screen, smaller, missing_targets="drop")
    assert targets[0] in dropped.dropped_targets and targets[0] not in dropped.targets
    with caplog.at_level(logging.WARNING, logger="cellsmith"):
        kept = prepare_screen(screen, smaller)  # default: kept, listed, its embedding learned
    assert targets[0] in kept.targets and kept.unembedded == [targets[0]]
    assert any("no embedding" in r.message and targets[0] in r.message for r in caplog.records)
    with pytest.warns(CellsmithDeprecationWarning):
        model = PerturbationModel.create(space, FinetuneConfig(**FAST))
    with pytest.raises(GeneSpaceError, match="NOTAGENE"):
        model.predict(screen, ["NOTAGENE"])


def test_perturbation_with_few_cells(screen, space, tmp_path, caplog):
    labels = screen.obs["target_gene"].astype(str).to_numpy()
    target = sorted(set(labels) - {"non-targeting"})[0]
    keep = np.ones(screen.n_obs, dtype=bool)
    keep[np.flatnonzero(labels == target)[12:]] = False  # 12 cells left: above the floor, below the set size
    few = screen[keep].copy()
    config = FinetuneConfig(**{**FAST, "set_size": 32, "min_cells": 10})
    with caplog.at_level(logging.WARNING, logger="cellsmith"):
        run_finetune(few, space, tmp_path / "few", config=config, split="heldout-cells")
    assert any(target in r.message and "fewer cells than the set size" in r.message for r in caplog.records)
    with pytest.raises(InputError, match=f"fewer than min_cells=20 cells \\({target}: 12"):
        run_finetune(few, space, tmp_path / "floor", config=config.model_copy(update={"min_cells": 20}))
    assert not (tmp_path / "floor").exists()


def test_counts_required(screen, space, tmp_path):
    from cellsmith.data import normalize
    from cellsmith.errors import ScaleError

    logged = screen.copy()
    logged.X = normalize.log1p_normalize(screen.X)
    with pytest.raises(ScaleError):
        run_finetune(logged, space, tmp_path / "m", config=FinetuneConfig(**FAST))
    assert not (tmp_path / "m").exists()


def test_baselines_on_a_hand_made_screen():
    space = GeneSpace(["A", "B", "C", "D"])
    # Shifts of A and B are (0, 1, 0, 0) +- 0.5 g with g = (1, -1, 0, 0.5): rank one after centring,
    # and the targets' own rows of g (1 and -1) match the perturbations' loadings.
    x = sp.csr_matrix(
        np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1.5, 1.5, 1, 1.25], [0.5, 2.5, 1, 0.75]], dtype=np.float32)
    )
    labels = np.array(["ctrl", "ctrl", "A", "B"])
    fit = Baselines.fit(x, labels, control_label="ctrl", genespace=space, n_components=1, ridge=0.0)
    np.testing.assert_allclose(fit.mean_shift, [0.0, 1.0, 0.0, 0.0], atol=1e-6)
    controls = np.ones((3, 4))
    np.testing.assert_allclose(fit.predictor("no_change")(controls, "A"), controls)
    np.testing.assert_allclose(fit.predictor("perturbation_mean")(controls, "C"), controls + [0, 1, 0, 0], atol=1e-6)
    # Without ridge the linear model reproduces its training perturbations exactly ...
    np.testing.assert_allclose(fit.shift("linear", "A"), [0.5, 0.5, 0, 0.25], atol=1e-5)
    np.testing.assert_allclose(fit.shift("linear", "B"), [-0.5, 1.5, 0, -0.25], atol=1e-5)
    # ... and predicts an unseen target through its gene's PCA coordinates (D: half of A's).
    np.testing.assert_allclose(fit.shift("linear", "D"), [0.25, 0.75, 0, 0.125], atol=1e-5)
    shrunk = Baselines.fit(x, labels, control_label="ctrl", genespace=space, n_components=1, ridge=0.1)
    assert (
        np.abs(shrunk.shift("linear", "A") - fit.mean_shift).sum()
        < np.abs(fit.shift("linear", "A") - fit.mean_shift).sum()
    )
    with pytest.raises(InputError, match="unknown baseline"):
        fit.shift("mean", "A")
    # Combinations: additive sums the singles' shifts, linear sums the targets' terms; a target
    # with no single adds the mean single shift (additive) or nothing (linear, outside the space).
    np.testing.assert_allclose(fit.shift("additive", "A+B"), [0.0, 2.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(fit.shift("additive", "A+OUT"), [0.5, 1.5, 0, 0.25], atol=1e-6)
    np.testing.assert_allclose(fit.shift("linear", "A_B"), [0.0, 1.0, 0, 0.0], atol=1e-5)
    np.testing.assert_allclose(fit.shift("linear", "OUT"), fit.mean_shift, atol=1e-6)


def test_energy_distance_is_zero_for_equal_sets_and_grows_with_a_shift():
    x = torch.randn(2, 50, 5, generator=torch.Generator().manual_seed(0))
    assert energy_distance(x, x).abs().max() < 1e-3
    near, far = energy_distance(x, x + 0.5), energy_distance(x, x + 2.0)
    assert (near > 0.1).all() and (far > near).all()
    ignored = torch.tensor([0.0, 1, 1, 1, 1])
    shifted = x.clone()
    shifted[..., 0] += 5.0
    assert energy_distance(x, shifted, ignored).abs().max() < 1e-3
