import json
import logging
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cellsmith.data import normalize, simulate
from cellsmith.deconvolution import HPVADE, DeconvolutionConfig, Deconvolver, LossWeights
from cellsmith.deconvolution.plan import first_batch_diagnostics
from cellsmith.errors import CellsmithDeprecationWarning, GeneSpaceError, InputError, ModelDirectoryError, ScaleError
from cellsmith.nn import LossOutput
from cellsmith.nn.saving import read_manifest

from deconvolution_tiny import TINY as TINY_OPTIONS
from deconvolution_tiny import tiny_reference

TINY = {**TINY_OPTIONS, "progress_bar": False}


def _train(reference, **options):
    """A tiny model (TINY options, overridden by ``options``), trained on ``reference``."""
    genes = options.pop("genes", None)
    return Deconvolver(DeconvolutionConfig(**{**TINY, **options})).train(
        reference, cell_type_key="cell_type", genes=genes
    )


@pytest.fixture(scope="module")
def reference():
    return tiny_reference()


@pytest.fixture(scope="module")
def trained(reference):
    return _train(reference)


def _bulk(reference, n=20, seed=3):
    return simulate.bulk(reference, n, cells_per_sample=100, seed=seed)


def test_train_returns_the_model_and_logs_every_term(reference):
    model = Deconvolver(DeconvolutionConfig(**{**TINY, "max_epochs": 1}))
    assert model.train(reference, cell_type_key="cell_type") is model
    for stage in ("train", "val"):
        for term in ("loss", "vae_recon", "vae_kl", "proto", "bulk_recon", "bulk_prop"):
            assert f"{stage}_{term}" in model.history.columns
    assert model.setup_dict()["cell_types"] == ["A", "B", "C"] and model.setup_dict()["cell_type_key"] == "cell_type"


def test_deprecated_classmethod_train_warns_and_works(reference, caplog):
    with pytest.warns(CellsmithDeprecationWarning, match=r"Deconvolver\(cfg\)\.train"), caplog.at_level(
        logging.INFO, logger="cellsmith"
    ):
        model = Deconvolver.train(
            reference, cell_type_key="cell_type", config=DeconvolutionConfig(**{**TINY, "max_epochs": 1}),
            progress_bar=False,
        )
    assert isinstance(model, Deconvolver) and model.config.max_epochs == 1
    assert "signature S initialised from the mean CPM" in caplog.text
    # The NNLS signature is the mean CPM of the training cells of each type (columns sum to 1e6).
    np.testing.assert_allclose(model.reference_signature.sum(0), 1e6, rtol=1e-6)
    module = HPVADE(torch.as_tensor(model.reference_signature, dtype=torch.float32))
    np.testing.assert_allclose(module.signature.detach().numpy(), model.reference_signature + 1e-3, rtol=1e-4)
    assert "first batch weighted loss terms" in caplog.text


def test_inference_on_training_pseudobulk_equals_training_output(trained, reference):
    labels = reference.obs["cell_type"].astype(str).to_numpy()
    counts = reference[:, list(trained.genespace)].X
    bulk_cpm, _ = trained._pseudobulk_tensors(counts, labels, np.arange(reference.n_obs), 16, seed=0)
    module = trained.module.cpu().eval()  # predict may have left it on a GPU
    with torch.no_grad():
        cells = normalize.log1p_normalize(counts[:8]).toarray().astype(np.float32)
        training_path = module(bulk_cpm, torch.from_numpy(cells))["proportions"].numpy()
    as_cpm = ad.AnnData(X=bulk_cpm.numpy(), var=pd.DataFrame(index=list(trained.genespace)))
    np.testing.assert_allclose(trained.predict(as_cpm).proportions.to_numpy(), training_path, atol=1e-6)
    # The same samples as unnormalised linear values (CPM x 3) give the same output.
    scaled = ad.AnnData(X=bulk_cpm.numpy() * 3, var=as_cpm.var)
    np.testing.assert_allclose(trained.predict(scaled).proportions.to_numpy(), training_path, atol=1e-5)


def test_predict_outputs_and_fit_quality(trained, reference):
    bulk = _bulk(reference)
    prediction = trained.predict(bulk)
    for frame in (prediction.proportions, prediction.nnls):
        assert list(frame.columns) == ["A", "B", "C"]
        np.testing.assert_allclose(frame.sum(1), 1.0, rtol=1e-5)
    assert bulk.obsm["proportions_hpvade"].shape == (20, 3)
    assert (bulk.obs["fit_r2_log_nnls"] > 0.8).all()
    # A bulk dominated by expression the reference lacks is poorly explained.
    foreign = bulk.copy()
    foreign.X = foreign.X + 50 * np.random.default_rng(0).poisson(50, foreign.shape)
    assert (trained.predict(foreign).fit["r2_log_nnls"] < bulk.obs["fit_r2_log_nnls"]).all()


def test_save_load_in_a_fresh_process(trained, reference, tmp_path):
    trained.save(tmp_path / "model")
    written = {p.name for p in (tmp_path / "model").iterdir()}
    assert {
        "cellsmith_model.json", "weights.safetensors", "config.yaml", "genespace.json", "setup.json",
        "signature.csv", "training.json", "history.csv", "report.html",
    } <= written
    assert read_manifest(tmp_path / "model")["workflow"] == "deconvolution"
    setup = json.loads((tmp_path / "model" / "setup.json").read_text())
    assert setup["cell_types"] == ["A", "B", "C"] and len(setup["mrna_content"]) == 3
    bulk = _bulk(reference)
    bulk.write_h5ad(tmp_path / "bulk.h5ad")
    script = (
        "import sys; from cellsmith.deconvolution import Deconvolver; from cellsmith.data import read_bulk;"
        "m = Deconvolver.load(sys.argv[1]); m.predict(read_bulk(sys.argv[2])).proportions.to_csv(sys.argv[3])"
    )
    subprocess.run(
        [sys.executable, "-c", script, tmp_path / "model", tmp_path / "bulk.h5ad", tmp_path / "p.csv"], check=True
    )
    fresh = pd.read_csv(tmp_path / "p.csv", index_col=0)
    np.testing.assert_allclose(fresh.to_numpy(), trained.predict(bulk).proportions.to_numpy(), atol=1e-6)


def test_training_is_seeded(reference, trained):
    again = _train(reference)
    bulk = _bulk(reference)
    np.testing.assert_allclose(again.predict(bulk).proportions, trained.predict(bulk).proportions, atol=1e-6)


def _as_cellsmith_01_folder(model, path):
    """The folder cellsmith 0.1 wrote for ``model``: a pickled state dict and plain files."""
    path.mkdir()
    torch.save(model.module.cpu().state_dict(), path / "weights.pt")
    config = model.config.model_dump(
        mode="json",
        exclude={"num_threads", "max_steps", "accelerator", "devices", "precision", "strategy", "progress_bar"},
    )
    (path / "config.yaml").write_text(yaml.safe_dump({**config, "torch_threads": 1}))
    model.genespace.write(path / "genespace.json")
    (path / "cell_types.json").write_text(json.dumps(model.cell_types))
    pd.DataFrame(model.reference_signature, index=list(model.genespace), columns=model.cell_types).to_csv(
        path / "signature.csv"
    )
    (path / "training.json").write_text(json.dumps(model.training))


def test_cellsmith_01_folder_loads_with_a_warning(trained, reference, tmp_path):
    _as_cellsmith_01_folder(trained, tmp_path / "old")
    with pytest.warns(CellsmithDeprecationWarning) as caught:
        old = Deconvolver.load(tmp_path / "old")
    messages = " ".join(str(w.message) for w in caught)
    assert "cellsmith 0.1" in messages and "'torch_threads'" in messages
    assert old.config.num_threads == 1 and old.training == trained.training
    bulk = _bulk(reference)
    np.testing.assert_allclose(old.predict(bulk).proportions, trained.predict(bulk).proportions, atol=1e-6)
    (tmp_path / "old" / "cell_types.json").unlink()
    with pytest.raises(ModelDirectoryError, match="missing cell_types.json"):
        Deconvolver.load(tmp_path / "old")


def test_config_defaults_and_old_keys():
    config = DeconvolutionConfig()
    assert (config.learning_rate, config.weight_decay, config.batch_size, config.max_epochs) == (1e-3, 1e-5, 128, 80)
    assert (config.patience, config.num_threads, config.seed) == (10, 1, 0)
    with pytest.warns(CellsmithDeprecationWarning, match="'torch_threads'"):
        assert DeconvolutionConfig(torch_threads=2).num_threads == 2


def test_dominant_loss_term_is_flagged(trained, reference):
    labels = reference.obs["cell_type"].astype(str).to_numpy()
    counts = reference[:, list(trained.genespace)].X
    bulk_cpm, truth = trained._pseudobulk_tensors(counts, labels, np.arange(50), 8, seed=0)
    cells = torch.from_numpy(normalize.log1p_normalize(counts[:8]).toarray().astype(np.float32))
    types = torch.zeros(8, dtype=torch.long)
    module = trained.module.cpu()
    out = module(bulk_cpm, cells)
    for weights, dominant in ((LossWeights(), None), (LossWeights(bulk_recon=1e7), "bulk_recon")):
        loss = module.loss(out, bulk_cpm, truth, cells, types, weights)
        assert isinstance(loss, LossOutput)
        assert set(loss.terms) == {"vae_recon", "vae_kl", "proto", "bulk_recon", "bulk_prop"}
        torch.testing.assert_close(loss.loss, sum(weights.weighted(loss.terms).values()))
        diagnostics = first_batch_diagnostics(module, out, bulk_cpm, loss, weights)
        assert diagnostics["dominant_term"] == dominant
    assert diagnostics["ranges"]["network_input"]["max"] < 15  # log1p(cpm/100), not raw CPM


def test_bad_bulk_is_refused(trained, reference):
    bulk = _bulk(reference)
    logged = bulk.copy()
    logged.X = np.log1p(normalize.cpm(logged.X))
    with pytest.raises(ScaleError, match="linear only in count/CPM"):
        trained.predict(logged)
    with_nan = bulk.copy()
    with_nan.X[0, 0] = np.nan
    with pytest.raises(ScaleError, match="NaN"):
        trained.predict(with_nan)
    few = bulk[:, :30].copy()
    with pytest.raises(GeneSpaceError, match="--genes-from BULK"):
        trained.predict(few)


@pytest.mark.parametrize("genes", [[], ["ABSENT1", "ABSENT2"]])
def test_training_on_no_known_genes_is_refused(reference, genes):
    with pytest.raises(GeneSpaceError, match=f"has 0 of the {len(genes)} genes to train on .* same identifiers"):
        Deconvolver(DeconvolutionConfig(**TINY_OPTIONS)).train(reference, cell_type_key="cell_type", genes=genes)


def test_exclude_patterns_on_no_genes_give_an_empty_mask():
    from cellsmith.deconvolution.reference import matching_any

    mask = matching_any([], ["^MT-"])
    assert mask.dtype == bool and mask.size == 0
    assert matching_any(["MT-CO1", "CD3E", "RPL3"], ["^MT-", "^RP[SL]"]).tolist() == [True, False, True]


def test_bad_reference_is_refused(reference, caplog):
    model = Deconvolver(DeconvolutionConfig(**TINY))
    with pytest.raises(InputError, match="no obs column 'celltype'"):
        model.train(reference, cell_type_key="celltype")
    logged = reference.copy()
    logged.X = normalize.log1p_normalize(logged.X)
    with pytest.raises(ScaleError, match="must hold raw counts"):
        model.train(logged, cell_type_key="cell_type")
    one = reference.copy()
    one.obs["cell_type"] = one.obs["cell_type"].astype(str)
    one.obs.iloc[0, one.obs.columns.get_loc("cell_type")] = "rare"
    with pytest.raises(InputError, match="fewer than 2 cells"):
        model.train(one, cell_type_key="cell_type")
    with pytest.raises(InputError, match="not trained"):
        model.predict(_bulk(reference))


def test_genes_restriction(reference):
    genes = list(reference.var_names[:60])
    model = _train(reference, genes=genes, max_epochs=1)
    assert set(model.genespace) <= set(genes)
    assert model.predict(_bulk(reference)[:, genes].copy()).proportions.shape == (20, 3)


def test_content_weighted_reconstruction_matches_mixing_of_cells():
    # Two types with known profiles; type B cells hold 3x the mRNA of type A cells.
    profiles = np.array([[0.5, 0.1], [0.3, 0.1], [0.2, 0.8]])  # genes x types, columns sum to 1
    content = np.array([1.0, 3.0])
    module = HPVADE(torch.as_tensor(profiles * 1e6, dtype=torch.float32), mrna_content=torch.as_tensor(content))
    cells = np.array([[30, 70], [80, 20]])  # cells of A and B per sample
    reads = cells @ (profiles * content).T  # summed reads: each cell contributes content x profile
    expected = reads / reads.sum(1, keepdims=True) * 1e6
    p = torch.as_tensor(cells / cells.sum(1, keepdims=True), dtype=torch.float32)
    np.testing.assert_allclose(module.reconstruct_bulk(p).detach().numpy(), expected, rtol=1e-4)
    plain = HPVADE(torch.as_tensor(profiles * 1e6, dtype=torch.float32))
    np.testing.assert_allclose(plain.reconstruct_bulk(p).detach().numpy(), p.numpy() @ profiles.T * 1e6, rtol=1e-4)


def test_markers_must_hold_in_most_cells_and_both_halves():
    from cellsmith.deconvolution.reference import consistent_marker_scores

    rng = np.random.default_rng(0)
    labels = np.array(["A"] * 40 + ["B"] * 40)
    counts = rng.poisson(5.0, (80, 4)).astype(float)
    counts[:40, 1] += 20  # gene 1: a marker of A in every A cell
    counts[0, 2] += 5000  # gene 2: huge in one A cell only (absent from one half)
    counts[:, 3] = 0
    counts[:5, 3] = 500  # gene 3: detected in 5 of 40 A cells only
    scores = consistent_marker_scores(counts, labels, ["A", "B"], min_mean_cpm=0.0, min_cell_fraction=0.3)
    assert np.argmax(scores[:, 0]) == 1
    assert scores[2, 0] < 0.5 * scores[1, 0]
    assert np.isneginf(scores[3, 0])


def test_dense_reference_counts_train(reference):
    dense = reference.copy()
    dense.X = dense.X.toarray()
    model = _train(dense, max_epochs=1)
    assert model.predict(_bulk(reference)).proportions.shape == (20, 3)


def test_training_noise_sd_is_fixed_or_drawn_per_sample():
    from types import SimpleNamespace

    from cellsmith.deconvolution.plan import HPVADEPlan

    bulk = torch.full((400, 300), 1e6 / 300)

    def spreads(setting):
        plan = SimpleNamespace(config=DeconvolutionConfig(gene_noise_sd=setting))
        torch.manual_seed(0)
        return torch.log(HPVADEPlan._augment(plan, bulk)).std(dim=1).numpy()

    fixed = spreads(0.3)
    np.testing.assert_allclose(fixed, 0.3, atol=0.05)  # every sample: SD 0.3
    ranged = spreads([0.0, 0.8])
    assert ranged.min() < 0.1 and ranged.max() > 0.7  # each sample draws its own SD in [0, 0.8]
    np.testing.assert_array_equal(spreads(0.0), 0.0)
    with pytest.raises(ValueError, match="low <= high"):
        DeconvolutionConfig(gene_noise_sd=[0.5, 0.1])
