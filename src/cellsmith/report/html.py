"""A self-contained HTML report: headings, text, tables and embedded PNG figures.

Every page explains itself: tables have one header row (index levels become ordinary label
columns), metric columns carry ↑ / ↓, the metrics shown are defined at the end of the page (with
their chance level), truncated tables say so, and the warnings of the run are shown at the top.
Wide tables scroll inside their own box instead of running off the page.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from cellsmith._logging import logger
from cellsmith.report.glossary import Metric, arrow, lookup
from cellsmith.report.io import write_atomic

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1240px;margin:2em auto;
padding:0 1em;color:#222}h1{border-bottom:2px solid #333}h2{margin-top:2em;border-bottom:1px solid #ccc}
.table-wrap{overflow-x:auto;max-width:100%;margin:1em 0}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.3em .5em;
text-align:right}th{background:#f2f2f2;vertical-align:bottom}.label{text-align:left}
td.key{background:#fafafa;font-weight:600}.arrow{color:#2a6;font-weight:400}
img{max-width:100%;margin:.5em 0}.note{color:#555}.warn{color:#a40}pre{background:#f6f6f6;padding:.6em;
overflow-x:auto}.warnings{border:1px solid #e0b070;background:#fff8ec;padding:.4em 1em;margin:1em 0}
.glossary td{text-align:left;vertical-align:top}
"""

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
# Metric names as written in prose ("r" and "n" are too short to find in text).
_NAMED_IN_TEXT = re.compile(r"(?<![\w@])(hit@\d|MRR|nDCG@5|confidence AUC|CCC|MAE|RMSE|DES|PDS|kNN mixing)(?![\w@])")


class _RunWarnings(logging.Handler):
    """The warnings of the running command: cellsmith's logged warnings and its Python warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    def emit(self, record: logging.LogRecord) -> None:
        self.add(record.getMessage())


# One per process, as logging's own handlers are: a command writes its report at its end and must
# show what was warned about before the report object existed.
_RUN_WARNINGS = _RunWarnings()


@contextmanager
def recording_warnings() -> Iterator[list[str]]:
    """While the block runs, record cellsmith's warnings; every report written then shows them.

    The CLI wraps each command in this, so that a warning a user must see (e.g. targets that
    could not be masked) is on the page and not only on stderr.
    """
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(_PACKAGE_DIR):
            _RUN_WARNINGS.add(str(message))
        previous(message, category, filename, lineno, file, line)

    _RUN_WARNINGS.messages.clear()
    logger.addHandler(_RUN_WARNINGS)
    warnings.showwarning = show
    try:
        yield _RUN_WARNINGS.messages
    finally:
        warnings.showwarning = previous
        logger.removeHandler(_RUN_WARNINGS)
        _RUN_WARNINGS.messages.clear()


def _flat_columns(frame: pd.DataFrame) -> pd.DataFrame:
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.set_axis([" ".join(str(p) for p in c if str(p)) for c in frame.columns], axis=1)
    return frame


def _long_if_wide(frame: pd.DataFrame, max_columns: int) -> pd.DataFrame:
    """Reshape a table of more than ``max_columns`` columns named ``{metric}_{statistic}`` (e.g.
    ``mrr_on``, ``mrr_off``, ``mrr_gap``) into one row per metric and one column per statistic,
    so that it fits the page; other tables are returned as they are."""
    parts = [re.fullmatch(r"(.+)_([^_]+)", str(c)) for c in frame.columns]
    numeric = all(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns)
    if frame.shape[1] <= max_columns or not numeric or not all(parts):
        return frame
    metrics = list(dict.fromkeys(p.group(1) for p in parts))
    statistics = list(dict.fromkeys(p.group(2) for p in parts))
    if len(metrics) * len(statistics) != frame.shape[1]:
        return frame
    wide = frame.set_axis(pd.MultiIndex.from_tuples([p.groups() for p in parts], names=["metric", None]), axis=1)
    long = wide.stack(level="metric", future_stack=True)
    order = pd.Categorical(long.index.get_level_values("metric"), categories=metrics)
    position = np.lexsort([order.codes, np.arange(len(long)) // len(metrics)])
    return long.iloc[position][statistics]


def _is_integral(values: pd.Series) -> bool:
    finite = values.dropna()
    return pd.api.types.is_float_dtype(values) and not finite.empty and bool((finite % 1 == 0).all())


def _cell(value: object, float_format: str, integral: bool) -> str:
    if value is None or (isinstance(value, float | np.floating) and pd.isna(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{int(value):,}" if integral else float_format.format(value)
    return html.escape(str(value))


def _header(name: object) -> str:
    # Long snake_case names may break after an underscore, so that headers do not widen tables.
    text = html.escape(str(name)).replace("_", "_<wbr>")
    direction = arrow(name)
    if not direction:
        return text
    tip = "higher is better" if direction == "↑" else "lower is better"
    return f'{text} <span class="arrow" title="{tip}">{direction}</span>'


class Report:
    """Build an HTML page section by section, then :meth:`write` it in one go.

    Figures are embedded as base64 PNGs, so the page is one self-contained file; they can
    also be saved as separate PNG files with ``save_png``.
    """

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []
        self._metrics: dict[str, Metric] = {}
        self._chance: dict[str, str] = {}
        self._warnings: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, *, css_class: str = "") -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")
        self._uses_named(text)

    def warning(self, text: str) -> None:
        """A warning shown in the box at the top of the page."""
        if text not in self._warnings:
            self._warnings.append(text)

    def code(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def define(self, name: str, *, chance: str | None = None) -> None:
        """Define metric ``name`` on this page; ``chance`` states its chance level for this run."""
        metric = lookup(name)
        if metric is None:
            raise KeyError(f"no definition of metric '{name}' in cellsmith.report.glossary")
        self._metrics[metric.name] = metric
        if chance is not None:
            self._chance[metric.name] = chance

    def _uses_named(self, text: str) -> None:
        for name in _NAMED_IN_TEXT.findall(text):
            self.define(name)

    def table(
        self,
        frame: pd.DataFrame,
        *,
        float_format: str = "{:.4g}",
        index: bool = True,
        max_rows: int | None = None,
        all_rows_in: str | None = None,
        max_columns: int = 12,
    ) -> None:
        """A table with one header row; index levels (unless the default 0..N-1) become label
        columns, repeated labels are shown once per group.

        Parameters
        ----------
        max_rows
            Show only the first ``max_rows`` rows, with a note saying how many there are.
        all_rows_in
            Where all rows are (a file name), for that note.
        max_columns
            A wider table of ``{metric}_{statistic}`` columns is shown with one row per metric.
        """
        frame = _flat_columns(frame)
        n_rows = len(frame)
        if max_rows is not None and n_rows > max_rows:
            frame = frame.head(max_rows)
        spread = [c for c in frame.columns if re.search(r"[ _](sd|std)$", str(c))]
        flat = [c for c in spread if frame[c].fillna(0).eq(0).all()]
        frame = _long_if_wide(frame.drop(columns=flat), max_columns)
        n_labels = 0
        if index and not isinstance(frame.index, pd.RangeIndex):
            n_labels = frame.index.nlevels
            frame = frame.reset_index(allow_duplicates=True)  # an index level may share a column's name
            frame.columns = ["" if str(c).startswith("level_") or c == "index" else c for c in frame.columns]
        labels = [i < n_labels or not pd.api.types.is_numeric_dtype(frame.iloc[:, i]) for i in range(frame.shape[1])]
        integral = [_is_integral(frame.iloc[:, i]) for i in range(frame.shape[1])]
        head = "".join(
            f'<th class="{"label" if labels[i] else "num"}">{_header(c)}</th>' for i, c in enumerate(frame.columns)
        )
        rows = []
        previous: list[object] = []
        for values in frame.itertuples(index=False):
            cells, same_group = [], True
            for i, value in enumerate(values):
                # An index label equal to the one above (within the same outer group) is left blank.
                same_group = same_group and i < n_labels and i < len(previous) and previous[i] == value
                shown = "" if same_group else _cell(value, float_format, integral[i])
                if labels[i] and shown and arrow(value):
                    shown = _header(value)
                kind = "label key" if i < n_labels else "label" if labels[i] else "num"
                cells.append(f'<td class="{kind}">{shown}</td>')
            previous = list(values)
            rows.append(f"<tr>{''.join(cells)}</tr>")
        self._parts.append(
            f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        )
        named = list(frame.columns) + (list(frame["metric"].unique()) if "metric" in frame else [])
        for name in named:
            metric = lookup(name)
            if metric is not None:
                self._metrics[metric.name] = metric
        notes = []
        if len(frame) < n_rows:
            where = f"; all rows in {all_rows_in}" if all_rows_in else ""
            notes.append(f"showing the first {len(frame):,} of {n_rows:,} rows{where}")
        if flat:
            notes.append("standard deviations left out: all are zero (one seed or one repeat)")
        if notes:
            text = "; ".join(notes)
            self.text(text[0].upper() + text[1:] + ".", css_class="note")

    def figure(self, fig, *, caption: str = "", save_png: str | Path | None = None) -> None:
        """Embed a matplotlib figure (and close it)."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        if save_png is not None:
            Path(save_png).write_bytes(buffer.getvalue())
        plt.close(fig)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        self._parts.append(f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(caption)}">')
        if caption:
            self.text(caption, css_class="note")

    def extend(self, other: Report) -> None:
        """Append another report's sections; its title becomes a heading unless this report's
        title already says it (no "Retrieval: ..." followed by "Retrieval")."""
        if not self.title.startswith(other.title):
            self.heading(other.title)
        self._parts.extend(other._parts)
        self._metrics.update(other._metrics)
        self._chance.update(other._chance)
        for text in other._warnings:
            self.warning(text)

    def _warnings_html(self) -> str:
        messages = [*self._warnings, *(m for m in _RUN_WARNINGS.messages if m not in self._warnings)]
        if not messages:
            return ""
        items = "".join(f"<li>{html.escape(m)}</li>" for m in messages)
        return f'<div class="warnings"><strong>Warnings of this run</strong><ul>{items}</ul></div>'

    def _glossary_html(self) -> str:
        if not self._metrics:
            return ""
        rows = "".join(
            f"<tr><td><strong>{html.escape(m.name)}</strong> {m.arrow}</td><td>{html.escape(m.definition)}</td>"
            f"<td>{html.escape(self._chance.get(m.name, m.chance))}</td></tr>"
            for m in self._metrics.values()
        )
        return (
            "<h2>Metrics on this page</h2><p class='note'>↑ higher is better, ↓ lower is better.</p>"
            "<div class='table-wrap'><table class='glossary'><thead><tr><th class='label'>metric</th>"
            f"<th class='label'>definition</th><th class='label'>chance level / reference</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )

    def to_html(self) -> str:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        body = "\n".join(self._parts)
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
            f"<p class='note'>cellsmith report, {stamp}</p>{self._warnings_html()}{body}"
            f"{self._glossary_html()}</body></html>"
        )

    def write(self, path: str | Path) -> Path:
        return write_atomic(path, lambda tmp: tmp.write_text(self.to_html()))
