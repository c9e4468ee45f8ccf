"""The HTML report explains itself: one header row, metric arrows and definitions, notes, warnings,
and (in headless Chromium, when installed) no table wider than the page."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cellsmith
from cellsmith.report import Report
from cellsmith.report.glossary import lookup, retrieval_chance
from cellsmith.report.html import recording_warnings

METRICS = ["exact_hit@1", "exact_hit@5", "mrr", "ndcg@5", "confidence_auc"]


def leakage_table() -> pd.DataFrame:
    """As wide as the retrieval report's leakage table: 3 label columns, 15 metric columns."""
    rng = np.random.default_rng(0)
    index = pd.MultiIndex.from_product(
        [["pca", "logreg", "head:pca"], ["mean", "raw_cell"], ["cell", "pseudobulk:20"]],
        names=["embedder", "library", "query"],
    )
    columns = [f"{m}_{s}" for m in METRICS for s in ("on", "off", "gap")]
    return pd.DataFrame(rng.random((len(index), len(columns))), index=index, columns=columns)


def small_report() -> Report:
    report = Report("Perturbation retrieval: which perturbation produced these cells?")
    part = Report("Perturbation retrieval")
    part.table(leakage_table())
    summary = leakage_table().rename(columns=lambda c: c.replace("_gap", "_sd").replace("_on", "_mean"))
    summary[[c for c in summary.columns if c.endswith("_sd")]] = 0.0
    part.table(summary)
    part.table(pd.DataFrame({"sample": [f"bulk{i}" for i in range(200)], "r2": np.linspace(0, 1, 200)}), max_rows=10)
    report.extend(part)
    return report


def test_tables_have_one_header_row_labels_and_arrows():
    page = small_report().to_html()
    assert page.count("<h2>Perturbation retrieval</h2>") == 0  # the title already says it
    first = page[page.index("<table>"):page.index("</table>")]
    assert first.count("<tr>") == 1 + 12 * 5 and first.count("</thead>") == 1  # no index-name row; long format
    assert '<th class="label">embedder</th>' in first
    assert re.search(r"<td class=\"label key\">mrr <span class=\"arrow\" title=\"higher is better\">↑</span>", first)
    assert "<th class=\"num\">gap</th>" in first  # a difference has no direction
    assert ">0<" not in first.split("<tbody>")[1][:200]  # no bare 0..N index column
    assert "Showing the first 10 of 200 rows" in page
    assert "Standard deviations left out" in page and "_<wbr>sd" not in page


def test_every_metric_shown_is_defined_with_its_chance_level():
    report = small_report()
    for metric, chance in retrieval_chance(21).items():
        report.define(metric, chance=chance)
    report.text("CCC and MAE of the pooled pairs.")
    page = report.to_html()
    glossary = page[page.index("Metrics on this page"):]
    for name in ("hit@k", "MRR", "nDCG@5", "confidence AUC", "CCC", "MAE"):
        assert f"<strong>{name}</strong>" in glossary, name
    assert "1/K = 0.048" in glossary  # hit@1 chance with 21 candidates
    assert lookup("fit_r2_log_hpvade").name == "R^2 (log)" and lookup("scale") is None


def test_warnings_of_the_run_are_on_the_page():
    from cellsmith._logging import logger

    with recording_warnings():
        logger.warning("16 of 25 targets could not be masked")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn_explicit("an outside library's warning", UserWarning, "/elsewhere/lib.py", 1)
            warnings.warn_explicit("mask requested, but 2 of 5 targets are not among the genes", UserWarning,
                                   str(Path(cellsmith.__file__).parent / "retrieval" / "masking.py"), 1)
        page = Report("run").to_html()
    assert "16 of 25 targets could not be masked" in page and "outside library" not in page
    assert "2 of 5 targets are not among the genes" in page
    assert "Warnings of this run" not in Report("later").to_html()  # recording ended with the block
    assert not any(type(h).__name__ == "_RunWarnings" for h in logging.getLogger("cellsmith").handlers)


# In the page, once laid out: does the page scroll sideways, and does any table need to scroll?
_PROBE = """<script>
const tables = [...document.querySelectorAll('table')].map(t => ({
  right: t.parentElement.getBoundingClientRect().right, width: t.scrollWidth, box: t.parentElement.clientWidth}));
document.title = 'probe:' + JSON.stringify({inner: window.innerWidth,
  page: document.documentElement.scrollWidth, tables: tables});
</script>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium on PATH (apt-get install chromium)")
def test_no_table_is_wider_than_the_page_in_chromium(tmp_path):
    page = tmp_path / "report.html"
    small_report().write(page)
    page.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = json.loads(re.search(r"<title>probe:(.*?)</title>", dom).group(1).replace("&quot;", '"'))
    assert found["page"] <= found["inner"], found
    assert len(found["tables"]) == 4  # the glossary too
    for table in found["tables"]:
        assert table["right"] <= found["inner"] and table["width"] <= table["box"], table
