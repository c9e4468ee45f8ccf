"""A self-contained HTML report: headings, text, tables and embedded PNG figures."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path

import pandas as pd

from cellsmith.report.io import write_atomic

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{border-bottom:2px solid #333}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em;
text-align:right}th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:.5em 0}.note{color:#555}.warn{color:#a40}pre{background:#f6f6f6;padding:.6em;
overflow-x:auto}
"""


class Report:
    """Build an HTML page section by section, then :meth:`write` it in one go.

    Figures are embedded as base64 PNGs, so the page is one self-contained file; they can
    also be saved as separate PNG files with ``save_png``.
    """

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, *, css_class: str = "") -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def code(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, frame: pd.DataFrame, *, float_format: str = "{:.4g}", index: bool = True) -> None:
        formatted = frame.copy()
        for col in formatted.columns:
            if pd.api.types.is_float_dtype(formatted[col]):
                formatted[col] = formatted[col].map(lambda v: "" if pd.isna(v) else float_format.format(v))
        self._parts.append(formatted.to_html(index=index, escape=True, border=0))

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
            self._parts.append(f'<p class="note">{html.escape(caption)}</p>')

    def extend(self, other: Report) -> None:
        """Append another report's sections (its title becomes a heading)."""
        self.heading(other.title)
        self._parts.extend(other._parts)

    def to_html(self) -> str:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        body = "\n".join(self._parts)
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
            f"<p class='note'>cellsmith report, {stamp}</p>{body}</body></html>"
        )

    def write(self, path: str | Path) -> Path:
        return write_atomic(path, lambda tmp: tmp.write_text(self.to_html()))
