"""data.io: separators sniffed whatever the suffix, R-style headers, gene names refused when repeated."""

from __future__ import annotations

import pytest

from cellsmith.data import read_bulk
from cellsmith.errors import GeneSpaceError, InputError


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("gene,s1,s2,s3\nCD3E,1,2,3\nMS4A1,4,5,6\n", "comma.txt"),
        ("s1,s2,s3\nCD3E,1,2,3\nMS4A1,4,5,6\n", "r_style.txt"),  # write.table: no header for the names
        ("gene;s1;s2;s3\nCD3E;1;2;3\nMS4A1;4;5;6\n", "semicolon.csv"),
        ("gene\ts1\ts2\ts3\nCD3E\t1\t2\t3\nMS4A1\t4\t5\t6\n", "tabs.csv"),
    ],
)
def test_separator_is_sniffed_whatever_the_suffix(tmp_path, text, name):
    path = tmp_path / name
    path.write_text(text)
    bulk = read_bulk(path, "genes-by-samples")
    assert list(bulk.obs_names) == ["s1", "s2", "s3"] and list(bulk.var_names) == ["CD3E", "MS4A1"]
    assert bulk.X[2].tolist() == [3, 6]


def test_repeated_genes_and_missing_values_are_refused(tmp_path):
    path = tmp_path / "bulk.csv"
    path.write_text("gene,s1,s2\nCD3E,1,2\nCD3E,4,5\nMS4A1,1,1\n")
    with pytest.raises(GeneSpaceError, match=r"duplicated gene names \(CD3E\).*var_names_make_unique"):
        read_bulk(path, "genes-by-samples")
    path.write_text("gene,s1,s2\nCD3E,1,\nMS4A1,1,1\n")
    with pytest.raises(InputError, match="1 empty or NA values"):
        read_bulk(path)


def test_auto_orientation_takes_short_sample_ids_for_samples(tmp_path):
    path = tmp_path / "wide.txt"  # more samples than genes, sample ids like s1 or bulk1
    path.write_text("s1,s2,s3,bulk4\nCD3E,1,2,3,4\nMS4A1,4,5,6,7\n")
    bulk = read_bulk(path)
    assert list(bulk.var_names) == ["CD3E", "MS4A1"] and bulk.n_obs == 4
    assert "look like gene ids" in bulk.uns["cellsmith"]["orientation"]
