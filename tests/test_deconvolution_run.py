"""`deconvolve run`, platform adaptation, the unknown fraction and log2 refusal (small simulations)."""

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellsmith.data import normalize, simulate
from cellsmith.deconvolution import DeconvolutionConfig, Deconvolver, nnls_proportions
from cellsmith.deconvolution.adapt import adapt, range_exponent
from cellsmith.deconvolution.unknown import UNKNOWN, Anchors, anchor_noise, known_log_share, set_floor, unknown_fraction
from cellsmith.errors import ScaleError

from deconvolution_tiny import TINY, tiny_reference, write_tiny_inputs
from deconvolution_tiny import invoke_deconvolve as invoke


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    _, bulk = write_tiny_inputs(root, 8)
    # The bulk lacks 40% of the reference's genes (`predict` would refuse a model trained on all)
    # and has genes the reference lacks.
    table = pd.DataFrame(bulk.X.T, index=bulk.var_names, columns=bulk.obs_names).iloc[48:]
    extra = pd.DataFrame(np.full((5, bulk.n_obs), 7.0), index=[f"EXTRA{i}" for i in range(5)], columns=table.columns)
    pd.concat([table, extra]).to_csv(root / "bulk.csv")
    bulk.obsm["proportions"].to_csv(root / "truth.csv")
    return root


def test_run_trains_on_shared_genes_and_writes_every_output(files):
    out = files / "out"
    result = invoke("run", "--reference", files / "ref.h5ad", "--cell-type-key", "cell_type", "--bulk",
                    files / "bulk.csv", "--out", out, "--config", files / "config.yaml", "--seed", "1",
                    "--orientation", "genes-by-samples")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "72 shared genes" in result.output
    for name in ("proportions.csv", "proportions.nnls.csv", "proportions.no-adapt.csv", "fit.csv", "report.html"):
        assert (out / name).is_file(), name
    props = pd.read_csv(out / "proportions.csv", index_col=0)
    assert list(props.columns) == ["A", "B", "C", UNKNOWN] and len(props) == 8
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-6)
    assert list(pd.read_csv(out / "proportions.nnls.csv", index_col=0).columns) == list(props.columns)
    fit = pd.read_csv(out / "fit.csv", index_col=0)
    assert {"r2_log_hpvade", "unknown_hpvade", "unknown_flag", "unknown_anchor_se", "unknown_set_floor"} <= set(
        fit.columns
    )
    assert (fit["unknown_anchor_se"] > 0).all()
    assert fit["unknown_set_floor"].nunique() == 1 and (fit["unknown_set_floor"] >= 0).all()  # one per set
    html = (out / "report.html").read_text()
    assert re.search(r"rests on \d+ anchor genes .* by about ±\d\.\d\d in log", html)
    assert re.search(r"upper decile (came out below 0, so the whole set was lowered by \d\.\d\d|did not)", html)
    assert "NNLS" in html and "--no-adapt" in html and "Platform adaptation" in html
    assert re.search(r"raised to the power \d\.\d\d to restore its dynamic range", html)
    model = Deconvolver.load(out / "model")
    assert model.config.seed == 1 and len(model.genespace) <= 72
    result = invoke("predict", "--model", out / "model", "--bulk", files / "bulk.csv", "--adapt",
                    "--out", files / "adapted.csv")
    assert result.exit_code == 0, (result.output, result.exception)
    pd.testing.assert_frame_equal(  # the saved model, adapted: the run's own proportions (types only)
        pd.read_csv(files / "adapted.csv", index_col=0), props.drop(columns=UNKNOWN).div(1 - props[UNKNOWN], axis=0),
        atol=1e-6,
    )
    result = invoke("evaluate", "--pred", out / "proportions.csv", "--truth", files / "truth.csv",
                    "--out", files / "ev")
    assert result.exit_code == 0, (result.output, result.exception)
    pooled = pd.read_csv(files / "ev" / "pooled_metrics.csv", index_col=0)
    assert list(pooled.index) == ["HP-VADE", "HP-VADE --no-adapt", "NNLS"]
    assert "predicted types without truth: unknown" in result.output

    plain = files / "plain"
    result = invoke("run", "--reference", files / "ref.h5ad", "--cell-type-key", "cell_type", "--bulk",
                    files / "bulk.csv", "--out", plain, "--config", files / "config.yaml", "--seed", "1", "--no-adapt")
    assert result.exit_code == 0, (result.output, result.exception)
    assert (plain / "proportions.csv").is_file() and not (plain / "proportions.no-adapt.csv").exists()
    # Same seed, no adaptation: the reference row of the first run.
    pd.testing.assert_frame_equal(
        pd.read_csv(plain / "proportions.csv", index_col=0), pd.read_csv(out / "proportions.no-adapt.csv", index_col=0)
    )


def test_log2_bulk_is_refused_with_unlog_advice_and_linear_intensities_pass(files, tmp_path):
    bulk = pd.read_csv(files / "bulk.csv", index_col=0)
    np.log2(bulk + 1).to_csv(tmp_path / "log2.csv")
    result = invoke("run", "--reference", files / "ref.h5ad", "--cell-type-key", "cell_type", "--bulk",
                    tmp_path / "log2.csv", "--out", tmp_path / "never", "--config", files / "config.yaml")
    assert isinstance(result.exception, ScaleError) and "2**x" in str(result.exception)
    assert not (tmp_path / "never").exists()

    # Linear microarray-like intensities: non-integer, unnormalised rows, audited as normalized.
    reference = tiny_reference()
    model = Deconvolver(DeconvolutionConfig(**TINY, progress_bar=False)).train(reference, cell_type_key="cell_type")
    arrays = simulate.bulk(reference, 6, cells_per_sample=100, seed=2)
    arrays.X = np.asarray(arrays.X, dtype=np.float64) * np.linspace(0.5, 3.0, 6)[:, None] * 1.37 + 16.0
    prediction = model.predict(arrays)
    assert np.isfinite(prediction.proportions.to_numpy()).all()


def simulated_platform(seed: int = 0):
    """300 genes x 4 types signature (CPM), 40 samples' truth, their clean bulk, log factors, and
    the NNLS fit on that signature."""
    rng = np.random.default_rng(seed)
    n_genes, n_types, n_samples = 300, 4, 40
    signature = rng.gamma(0.5, 1.0, (n_genes, n_types)) * rng.lognormal(0, 1, (n_genes, 1))
    signature = normalize.cpm(signature.T).T
    truth = rng.dirichlet(np.ones(n_types), n_samples)
    log_platform = rng.normal(0, 0.8, n_genes)
    clean = normalize.cpm(truth @ signature.T)

    def fit(cpm):
        proportions, coefficients = nnls_proportions(cpm, signature)
        return proportions, coefficients @ signature.T

    return truth, clean, log_platform, fit


def test_adaptation_recovers_a_simulated_platform_shift():
    truth, clean, log_platform, fit = simulated_platform()
    shifted = normalize.cpm(clean * np.exp(log_platform))
    adapted = adapt(shifted, fit)
    assert abs(adapted.exponent - 1.0) < 0.1  # gene-wise factors alone leave the range as it is
    assert np.corrcoef(adapted.log_factors, log_platform)[0, 1] > 0.9
    distance = lambda bulk: np.abs(np.log1p(bulk) - np.log1p(clean)).mean()  # noqa: E731
    # 40 / (40 + PRIOR_SAMPLES) of the estimated shift is corrected: the distance to the
    # unshifted bulk at least halves.
    assert distance(adapted.corrected) < 0.5 * distance(shifted)
    assert 0.5 < adapted.weight <= 40 / 45


@pytest.mark.parametrize("power", [0.8, 0.6])
def test_adaptation_estimates_a_compressed_dynamic_range(power):
    """A platform that narrows the range (CPM ** power, as a microarray) on top of gene factors:
    the exponent comes out near 1 / power and the bulk is raised to it before the factors. (What
    that gains HP-VADE is measured in benchmarks/deconvolution_platform.py --compressions: with
    this toy's NNLS fit, gene factors alone absorb most of the compression.)"""
    _, clean, log_platform, fit = simulated_platform(1)
    compressed = normalize.cpm(clean**power * np.exp(0.5 * log_platform))
    exponent = range_exponent(compressed, fit(compressed)[1])
    assert exponent == pytest.approx(1 / power, rel=0.1)
    adapted = adapt(compressed, fit)
    assert adapted.exponent == exponent
    restored = adapt(normalize.cpm(compressed**exponent), fit, restore_range=False)
    np.testing.assert_allclose(adapted.proportions, restored.proportions)
    assert adapt(compressed, fit, restore_range=False).exponent == 1.0


def test_prediction_carries_the_range_exponent_only_when_adapted():
    """The exponent is the network's own range estimate on this bulk; raising the bulk to it and
    adapting by gene factors alone gives the same proportions."""
    reference = tiny_reference()
    model = Deconvolver(DeconvolutionConfig(**TINY, progress_bar=False)).train(reference, cell_type_key="cell_type")
    bulk = simulate.bulk(reference, 6, cells_per_sample=100, seed=3)
    assert model.predict(bulk.copy()).range_exponent is None
    adapted = model.predict(bulk.copy(), adapt=True)
    cpm = model.bulk_cpm(bulk)
    assert adapted.range_exponent == range_exponent(cpm, model.network_fit(cpm)[1])
    restored = adapt(normalize.cpm(cpm**adapted.range_exponent), model.network_fit, restore_range=False)
    np.testing.assert_allclose(adapted.proportions.to_numpy(), restored.proportions, atol=1e-6)


def test_too_few_anchors_leave_the_unknown_unestimated(monkeypatch, caplog, tmp_path):
    """Below MIN_ANCHORS the model warns, keeps no anchors (none saved or loaded) and predicts an
    ``unknown`` of NaN beside proportions that still sum to 1."""
    import cellsmith.deconvolution.model as model_module

    monkeypatch.setattr(model_module, "MIN_ANCHORS", 10_000)
    reference = tiny_reference()
    model = Deconvolver(DeconvolutionConfig(**TINY, progress_bar=False)).train(reference, cell_type_key="cell_type")
    assert model.anchors is None and "no unknown fraction will be estimated" in caplog.text
    model.save(tmp_path / "model")
    assert not (tmp_path / "model" / "anchors.csv").exists()
    loaded = Deconvolver.load(tmp_path / "model")
    bulk = simulate.bulk(reference, 4, cells_per_sample=100, seed=1)
    prediction = loaded.predict(bulk)
    assert "unknown_hpvade" not in prediction.fit
    table = prediction.with_unknown("hpvade")
    assert table[UNKNOWN].isna().all()
    np.testing.assert_allclose(table.drop(columns=UNKNOWN).sum(axis=1), 1.0, atol=1e-6)


def test_anchors_are_a_property_of_the_reference_not_of_the_seed():
    """The seed moves the training split and the model's markers, not the anchors (on every cell,
    away from the markers the same rule picks there), so the unknown's genes are reproducible."""
    reference = simulate.singlecell(600, 1000, cell_types=("A", "B", "C"), donors=1, seed=4)
    options = {**TINY, "n_marker_genes": 10, "min_mean_cpm": 0.0, "max_epochs": 1}
    models = [
        Deconvolver(DeconvolutionConfig(**options, seed=seed, progress_bar=False)).train(
            reference, cell_type_key="cell_type"
        )
        for seed in (0, 1, 2)
    ]
    assert len({tuple(model.genespace) for model in models}) > 1  # the markers moved with the seed
    anchors = [model.anchors.genes for model in models]
    assert len(anchors[0]) >= 10 and anchors[0] == anchors[1] == anchors[2]


def test_unknown_fraction_recovers_reads_the_reference_cannot_produce():
    """Unknown cells (as neutrophils for a lymphocyte reference) carry the genes every cell has
    (anchors) at the reference's level, none of the reference's markers, and their own genes."""
    reference = simulate.singlecell(600, 1000, cell_types=("A", "B", "C"), donors=1, seed=4)
    options = {**TINY, "n_marker_genes": 10, "min_mean_cpm": 0.0, "n_train_samples": 512, "max_epochs": 15}
    config = DeconvolutionConfig(**options, progress_bar=False)
    model = Deconvolver(config).train(reference, cell_type_key="cell_type")
    assert model.anchors is not None
    known = simulate.bulk(reference, 30, cells_per_sample=200, seed=6)
    counts = np.asarray(known.X, dtype=np.float64)
    share = np.random.default_rng(0).uniform(0.0, 0.7, 30)
    share[:5] = 0.0
    # Per read, unknown cells hold the anchors as the reference's cells do; the rest of their
    # reads go to 20 genes the reference lacks.
    anchor_share = model.anchors.signature.mean(axis=1) / 1e6
    unknown_reads = counts.sum(axis=1, keepdims=True) * share[:, None] / (1 - share[:, None])
    anchors = pd.Index(known.var_names).get_indexer(model.anchors.genes)
    counts[:, anchors] += unknown_reads * anchor_share
    own = np.repeat(unknown_reads * (1 - anchor_share.sum()) / 20, 20, axis=1)
    bulk = pd.DataFrame(np.hstack([counts, own]), columns=[*known.var_names, *(f"NEU{i}" for i in range(20))])
    samples = ad.AnnData(
        bulk.to_numpy(), obs=pd.DataFrame(index=[f"s{i}" for i in range(30)]), var=pd.DataFrame(index=bulk.columns)
    )
    unknown = model.predict(samples).fit["unknown_hpvade"].to_numpy()
    assert np.corrcoef(unknown, share)[0, 1] > 0.9
    assert np.abs(unknown - share).mean() < 0.1
    assert unknown[:5].max() < 0.1


def test_anchor_noise_is_the_standard_error_of_the_anchors_median():
    """Anchors with independent platform factors of SD 0.8: their median log-ratio moves by about
    1.25 * 0.8 / sqrt(n), whatever the bulk's scale or composition, and NaN (absent) anchors do
    not count."""
    rng = np.random.default_rng(0)
    n_anchors, sd = 400, 0.8
    anchors = Anchors([f"g{i}" for i in range(n_anchors)], rng.uniform(50, 500, (n_anchors, 3)), np.ones(3))
    read_fraction = rng.dirichlet(np.ones(3), 6)
    factors = np.exp(rng.normal(0.0, sd, n_anchors))
    bulk = 37.0 * (read_fraction @ anchors.signature.T) * factors
    expected = np.sqrt(np.pi / 2) * sd / np.sqrt(n_anchors)
    np.testing.assert_allclose(anchor_noise(bulk, read_fraction, anchors), expected, rtol=0.15)
    bulk[:, n_anchors // 2 :] = np.nan
    np.testing.assert_allclose(anchor_noise(bulk, read_fraction, anchors), expected * np.sqrt(2), rtol=0.2)
    assert np.isnan(anchor_noise(np.full((1, n_anchors), np.nan), read_fraction[:1], anchors)).all()


def test_a_set_whose_anchors_read_low_is_lowered_as_a_whole():
    """Anchors reading 0.3 low in log (one platform offset for the set): clipped sample by sample,
    the unknown falls 0.14 below the truth on average; floored at the set level it comes within 0.05,
    it never falls, and one sample alone is clipped as before."""
    rng = np.random.default_rng(1)
    n_markers, n_anchors = 300, 30
    anchors = Anchors([f"a{i}" for i in range(n_anchors)], rng.uniform(50, 500, (n_anchors, 3)), np.ones(3))
    signature = rng.uniform(20, 2000, (n_markers, 3))
    share = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    read_fraction = rng.dirichlet(np.ones(3), share.size)
    noise = np.exp(rng.normal(0.0, 0.02, (share.size, n_markers)))
    markers = (1 - share)[:, None] * (read_fraction @ signature.T) * noise
    anchor_values = (read_fraction @ anchors.signature.T) * np.exp(-0.3)
    marker_genes = [f"m{i}" for i in range(n_markers)]
    log_known = known_log_share(markers, anchor_values, read_fraction, signature, anchors, marker_genes)
    floored = unknown_fraction(log_known, set_floor(log_known))
    assert 0.2 < set_floor(log_known) < 0.3
    per_sample = np.array([unknown_fraction(log_known[[i]], set_floor(log_known[[i]]))[0] for i in range(share.size)])
    np.testing.assert_allclose(per_sample, np.clip(1 - (1 - share) * np.exp(0.3), 0, 1), atol=0.02)
    assert np.abs(per_sample - share).mean() > 0.1
    assert np.abs(floored - share).max() < 0.05
    assert (floored >= per_sample - 1e-12).all()


def test_a_model_gene_that_is_also_an_anchor_stays_out_of_the_markers_side():
    """Every cell carries an anchor, so among the markers it would pull log(1 - u) towards 0: with
    half the markers' columns being anchors (at the level of all the cells), the estimate is the
    one of the other markers alone."""
    rng = np.random.default_rng(2)
    n_markers, n_anchors, u = 200, 200, 0.4
    anchors = Anchors([f"a{i}" for i in range(n_anchors)], rng.uniform(50, 500, (n_anchors, 3)), np.ones(3))
    signature = rng.uniform(20, 2000, (n_markers, 3))
    read_fraction = rng.dirichlet(np.ones(3), 5)
    markers = (1 - u) * (read_fraction @ signature.T)
    anchor_values = read_fraction @ anchors.signature.T
    names = [f"m{i}" for i in range(n_markers)]
    alone = known_log_share(markers, anchor_values, read_fraction, signature, anchors, names)
    np.testing.assert_allclose(alone, np.log(1 - u))
    with_anchors = known_log_share(
        np.hstack([markers, anchor_values]), anchor_values, read_fraction,
        np.vstack([signature, anchors.signature]), anchors, names + anchors.genes,
    )
    np.testing.assert_allclose(with_anchors, alone)
