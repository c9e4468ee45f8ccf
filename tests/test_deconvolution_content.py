"""mRNA per cell in real bulk: name matching, settings, re-weighting, and the model's use of it."""

import logging

import numpy as np
import pytest

from cellsmith.data import simulate
from cellsmith.deconvolution import DeconvolutionConfig, Deconvolver
from cellsmith.deconvolution.content import (
    DEFAULT_MRNA,
    bulk_content,
    content_setting,
    immune_content,
    reweight,
)
from cellsmith.errors import ConfigError, InputError

from deconvolution_tiny import TINY, invoke_deconvolve, tiny_reference

MONO, LYMPH_T, NK, B = 1.4196, 0.3952, 0.4396, 0.4016


@pytest.mark.parametrize(
    ("name", "value"),
    [("Monocyte", MONO), ("CD14+ Monocytes", MONO), ("FCGR3A+ Mono", MONO), ("Macrophages", MONO),
     ("CD4 T", LYMPH_T), ("T.cells.CD8", LYMPH_T), ("CD8_Tcells", LYMPH_T), ("Treg", LYMPH_T), ("NKT", LYMPH_T),
     ("NK", NK), ("NK cells", NK), ("B", B), ("Bcells", B), ("memory B cells", B), ("Neutrophils", 0.13),
     ("Dendritic", DEFAULT_MRNA), ("type0", DEFAULT_MRNA)],
)
def test_immune_names_get_their_measured_mrna(name, value):
    values, unmatched = immune_content([name])
    assert values[0] == pytest.approx(value)
    assert (name in unmatched) == (value == DEFAULT_MRNA)


def test_settings_reference_other_names_and_tables():
    types = ["B", "CD4 T", "NK", "Monocyte", "DC"]
    np.testing.assert_allclose(bulk_content(types, "immune"), [B, LYMPH_T, NK, MONO, DEFAULT_MRNA])
    assert bulk_content(types, "reference") is None
    # Mostly non-immune names (B among A/B/C matches by chance): nothing is re-weighted.
    assert bulk_content(["A", "B", "C"], "immune") is None
    np.testing.assert_allclose(bulk_content(["x", "y"], {"x": 1, "y": 3.0}), [1.0, 3.0])
    with pytest.raises(ConfigError, match="no value for y"):
        bulk_content(["x", "y"], {"x": 1.0})
    with pytest.raises(ConfigError, match="bulk_mrna_content of y must be a positive mRNA per cell, found 0.0"):
        bulk_content(["x", "y"], {"x": 1.0, "y": 0.0})
    with pytest.raises(ConfigError, match="not a setting"):
        bulk_content(["x"], "blood")


def test_reweight_moves_cells_from_mrna_rich_types():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    # Reference: type 1 has twice type 0's counts; bulk: equal mRNA -> type 1's share rises.
    np.testing.assert_allclose(reweight(p, np.array([1.0, 2.0]), np.array([1.0, 1.0])), [[1 / 3, 2 / 3], [1.0, 0.0]])


def test_content_setting_reads_yaml_and_two_column_tables(tmp_path):
    assert content_setting("immune") == "immune"
    (tmp_path / "c.yaml").write_text("CD4 T: 0.4\nMonocyte: 1.4\n")
    assert content_setting(str(tmp_path / "c.yaml")) == {"CD4 T": 0.4, "Monocyte": 1.4}
    (tmp_path / "c.csv").write_text("cell_type,mrna\nCD4 T,0.4\nMonocyte,1.4\n")
    assert content_setting(str(tmp_path / "c.csv")) == {"CD4 T": 0.4, "Monocyte": 1.4}
    (tmp_path / "wide.csv").write_text("cell_type,a,b\nCD4 T,0.4,1\n")
    with pytest.raises(InputError, match="2 value columns"):
        content_setting(str(tmp_path / "wide.csv"))
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="map each cell type"):
        content_setting(str(tmp_path / "bad.yaml"))


@pytest.fixture(scope="module")
def immune_model():
    reference = tiny_reference(("B", "CD4 T", "Monocyte"))
    model = Deconvolver(DeconvolutionConfig(**TINY)).train(reference, cell_type_key="cell_type")
    return model, simulate.bulk(reference, 6, cells_per_sample=100, seed=5)


def test_model_reweights_to_bulk_mrna_unless_told_reference(immune_model):
    model, bulk = immune_model
    plain = model.predict(bulk.copy(), mrna_content="reference")
    weighted = model.predict(bulk.copy(), mrna_content="immune")
    assert plain.mrna_content is None and list(weighted.mrna_content.columns) == ["reference", "bulk"]
    counts = np.asarray(model.setup["counts_per_cell"])
    expected = reweight(plain.proportions.to_numpy(), counts, np.array([B, LYMPH_T, MONO]))
    np.testing.assert_allclose(weighted.proportions.to_numpy(), expected, rtol=1e-6)
    # Monocytes carry ~3.6x a lymphocyte's mRNA: fewer monocyte cells explain the same reads.
    assert (weighted.proportions["Monocyte"] < plain.proportions["Monocyte"]).all()
    np.testing.assert_array_equal(weighted.nnls, plain.nnls)  # NNLS stays the plain baseline
    table = model.predict(bulk.copy(), mrna_content={"B": 1.0, "CD4 T": 1.0, "Monocyte": 1.0})
    np.testing.assert_allclose(
        table.proportions.to_numpy(), reweight(plain.proportions.to_numpy(), counts, np.ones(3)), rtol=1e-6
    )


def test_models_without_counts_per_cell_keep_reference_weights(immune_model, caplog):
    model, bulk = immune_model
    saved = model.setup.pop("counts_per_cell")
    try:
        with caplog.at_level(logging.WARNING, logger="cellsmith"):
            prediction = model.predict(bulk.copy(), mrna_content="immune")
    finally:
        model.setup["counts_per_cell"] = saved
    assert prediction.mrna_content is None and "train it again" in caplog.text


def test_cli_predict_takes_a_content_file_and_refuses_a_bad_one(immune_model, tmp_path):
    import pandas as pd

    model, bulk = immune_model
    model.save(tmp_path / "model")
    bulk.write_h5ad(tmp_path / "bulk.h5ad")
    (tmp_path / "content.yaml").write_text("B: 1\nCD4 T: 1\nMonocyte: 2\n")
    common = ["predict", "--model", tmp_path / "model", "--bulk", tmp_path / "bulk.h5ad"]
    result = invoke_deconvolve(*common, "--mrna-content", tmp_path / "content.yaml", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    expected = model.predict(bulk.copy(), mrna_content={"B": 1, "CD4 T": 1, "Monocyte": 2}).proportions
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv", index_col=0).to_numpy(), expected.to_numpy(), rtol=1e-5)
    (tmp_path / "partial.yaml").write_text("B: 1\n")
    result = invoke_deconvolve(*common, "--mrna-content", tmp_path / "partial.yaml", "--out", tmp_path / "q.csv")
    # A ConfigError: `cellsmith` prints it and exits 2 (tests/test_cli.py checks that mapping).
    assert isinstance(result.exception, ConfigError) and "no value for CD4 T, Monocyte" in str(result.exception)
    assert not (tmp_path / "q.csv").exists()


def test_cellsmith_pseudobulks_keep_reference_weights_by_default(immune_model):
    model, bulk = immune_model
    assert "pseudobulk" in bulk.uns  # simulate.bulk -> pseudobulk()
    default = model.predict(bulk.copy())
    assert default.mrna_content is None
    measured = bulk.copy()
    del measured.uns["pseudobulk"]  # a bulk from elsewhere: the config's default, immune
    assert model.predict(measured).mrna_content is not None


def test_unknown_share_of_reads_becomes_share_of_cells():
    from cellsmith.deconvolution.content import BulkContent, unknown_cells, unknown_mrna_for

    # 20% of reads from cells with half the known cells' mRNA: 0.2 / 0.2 against 0.8 / 0.4, a third of cells.
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    content = BulkContent(np.array([0.4, 0.4]), unknown=0.2)
    np.testing.assert_allclose(unknown_cells(np.array([0.2, 0.0]), p, content), [1.0 / (1.0 + 2.0), 0.0])
    np.testing.assert_allclose(unknown_cells(np.array([0.2]), p[:1], BulkContent(np.ones(2))), [0.2])
    assert unknown_mrna_for("immune") == DEFAULT_MRNA and unknown_mrna_for("reference") is None
    assert unknown_mrna_for({"x": 1.0, "unknown": 0.13}) == 0.13 and unknown_mrna_for({"x": 1.0}) is None
    assert unknown_mrna_for("immune", 0.13) == 0.13
    with pytest.raises(ConfigError, match="unknown_mrna must be a positive mRNA per cell"):
        unknown_mrna_for("immune", 0.0)
    with pytest.raises(ConfigError, match="'unknown' entry must be a positive mRNA per cell"):
        unknown_mrna_for({"x": 1.0, "unknown": -1.0})


def test_model_converts_its_unknown_with_the_unknown_cells_mrna(immune_model):
    from cellsmith.deconvolution.content import BulkContent, unknown_cells

    model, bulk = immune_model
    measured = bulk.copy()
    del measured.uns["pseudobulk"]
    reads = model.predict(measured.copy(), mrna_content="reference").fit["unknown_hpvade"].to_numpy()
    low = model.predict(measured.copy(), unknown_mrna=0.13)
    assert low.mrna_content.loc["unknown", "bulk"] == pytest.approx(0.13 / np.mean([B, LYMPH_T, MONO]))
    expected = unknown_cells(reads, low.proportions.to_numpy(), BulkContent(np.array([B, LYMPH_T, MONO]), 0.13))
    np.testing.assert_allclose(low.fit["unknown_hpvade"], expected, rtol=1e-9)
    # Fewer mRNA per unknown cell than per known cell: more unknown cells than unknown reads.
    assert (reads > 0).any() and (low.fit["unknown_hpvade"].to_numpy()[reads > 0] > reads[reads > 0]).all()
    np.testing.assert_allclose(low.with_unknown().sum(axis=1), 1.0)
