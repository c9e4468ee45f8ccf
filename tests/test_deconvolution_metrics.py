import numpy as np
import pandas as pd
import pytest

from cellsmith.deconvolution.evaluate import compare, read_mapping
from cellsmith.errors import InputError
from cellsmith.metrics.deconvolution import (
    REGISTRY,
    TypePair,
    concordance,
    map_types,
    parse_mapping,
    pearson,
    pooled_mae,
    pooled_rmse,
)


def test_pearson_and_ccc_known_values():
    truth = np.array([0.1, 0.2, 0.3, 0.4])
    assert pearson(truth, truth) == pytest.approx(1.0)
    assert concordance(truth, truth) == pytest.approx(1.0)
    shifted = truth + 0.2  # perfectly correlated, not concordant
    assert pearson(shifted, truth) == pytest.approx(1.0)
    # Lin: 2 cov / (var_x + var_y + (mean_x - mean_y)^2) = 2*0.0125 / (0.025 + 0.04)
    assert concordance(shifted, truth) == pytest.approx(0.025 / 0.065)
    assert np.isnan(pearson([0.1, 0.2], [0.3, 0.1]))  # two points: undefined, not +-1


def test_nan_truth_is_skipped_in_every_metric():
    truth = pd.DataFrame({"A": [0.2, np.nan, 0.6, 0.4], "B": [0.8, 0.5, 0.4, 0.6]})
    pred = pd.DataFrame({"A": [0.3, 0.9, 0.5, 0.4], "B": [0.7, 0.5, 0.5, 0.6]})
    assert pooled_mae(pred, truth) == pytest.approx((0.1 + 0.1 + 0 + 0.1 + 0 + 0.1 + 0) / 7)
    assert pooled_rmse(pred, truth) == pytest.approx(np.sqrt(4 * 0.01 / 7))
    per_type = REGISTRY.get("pearson_per_type")(pred, truth)
    assert per_type["A"] == pytest.approx(np.corrcoef([0.3, 0.5, 0.4], [0.2, 0.6, 0.4])[0, 1])
    with pytest.raises(InputError, match="unknown deconvolution metric 'r2'"):
        REGISTRY.get("r2")


def test_mapping_sums_in_both_directions():
    pred = pd.DataFrame({"CD4 T": [0.3, 0.2, 0.1], "CD8 T": [0.1, 0.2, 0.1], "B": [0.6, 0.6, 0.8]})
    truth = pd.DataFrame(
        {"Tcells": [0.4, 0.5, 0.2], "T.CD4": [0.3, 0.3, 0.1], "T.CD8": [0.1, 0.2, 0.1],
         "Bcells": [0.6, 0.5, 0.8], "Neutrophils": [np.nan] * 3}
    )
    pairs = parse_mapping(
        {"Tcells": ["CD4 T", "CD8 T"], "Bcells": "B", "Neutrophils": "B",
         "T sub": {"truth": ["T.CD4", "T.CD8"], "pred": ["CD4 T", "CD8 T"]}}
    )
    mapped = map_types(pred, truth, pairs)
    np.testing.assert_allclose(mapped.pred["Tcells"], [0.4, 0.4, 0.2])
    np.testing.assert_allclose(mapped.truth["T sub"], [0.4, 0.5, 0.2])
    assert mapped.skipped == ["Neutrophils"] and "Neutrophils" not in mapped.truth
    assert mapped.truth_unused == []
    assert map_types(pred, truth, [TypePair("B", ("Bcells",), ("B",))]).pred_without_truth == ["CD4 T", "CD8 T"]
    with pytest.raises(InputError, match=r"truth columns \['Monocytes'\]"):
        map_types(pred, truth, parse_mapping({"Monocytes": "B"}))
    with pytest.raises(InputError, match="exactly the keys"):
        parse_mapping({"T": {"truth": "Tcells"}})


def test_compare_reports_both_methods_and_notes(tmp_path):
    idx = [f"s{i}" for i in range(5)]
    truth = pd.DataFrame({"Tcells": [0.5, 0.6, 0.4, 0.7, 0.3], "Neutrophils": np.nan}, index=idx)
    good = pd.DataFrame({"CD4 T": [0.3, 0.4, 0.2, 0.5, 0.1], "CD8 T": 0.2}, index=idx)
    bad = good.iloc[::-1].set_axis(idx)
    (tmp_path / "map.yaml").write_text("Tcells: [CD4 T, CD8 T]\nNeutrophils: CD8 T\n")
    result = compare({"HP-VADE": good, "NNLS": bad}, truth, mapping=read_mapping(tmp_path / "map.yaml"))
    assert result.pooled.loc["HP-VADE", "mae"] == pytest.approx(0.0, abs=1e-12)
    assert result.pooled.loc["NNLS", "mae"] == pytest.approx(0.12)
    assert any("skipped" in note and "Neutrophils" in note for note in result.notes)
    from_cli = read_mapping(None, ["Tcells=CD4 T,CD8 T"])
    assert from_cli == [TypePair("Tcells", ("Tcells",), ("CD4 T", "CD8 T"))]
    with pytest.raises(InputError, match="share no names"):
        compare({"HP-VADE": good}, truth)
    with pytest.raises(InputError, match="share no sample names"):
        compare({"HP-VADE": good.set_axis(list("abcde"))}, truth, mapping=from_cli)
