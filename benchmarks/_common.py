"""Helpers shared by benchmark scripts: machine description and BENCHMARKS.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import resource
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def machine() -> str:
    """One line: CPU count, memory, Python and torch versions, load average."""
    import torch

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU cores, {mem_gb:.0f} GiB RAM, {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}; load average {load}"
    )


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_section(key: str, markdown: str) -> None:
    """Replace the block between ``<!-- key:start -->`` and ``<!-- key:end -->`` in
    BENCHMARKS.md (appending it at the end when absent)."""
    text = BENCHMARKS_MD.read_text()
    block = f"<!-- {key}:start -->\n{markdown.strip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
