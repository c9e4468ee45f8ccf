"""``cellsmith demo``: every workflow on built-in simulated data, one HTML report.

Each workflow contributes a section module here, ``cellsmith.demo.<workflow>``, whose
``demo_section(out_dir, *, seed) -> Report`` writes its files under ``out_dir`` and returns its
part of the page. Demo code lives in this package, above every workflow, so that no workflow or
``data`` module imports the demo's datasets or report pages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from cellsmith.errors import InputError
from cellsmith.report import Report, atomic_output_dir

DemoSection = Callable[..., Report]


def _sections() -> list[tuple[str, DemoSection]]:
    from cellsmith.demo.data import demo_section as data_section
    from cellsmith.demo.deconvolution import demo_section as deconvolution_section
    from cellsmith.demo.perturbation import demo_section as perturbation_section
    from cellsmith.demo.retrieval import demo_section as retrieval_section
    from cellsmith.demo.scvi import demo_section as scvi_section

    return [
        ("data", data_section),
        ("deconvolution", deconvolution_section),
        ("perturbation", perturbation_section),
        ("retrieval", retrieval_section),
        ("scvi", scvi_section),
    ]


def run_demo(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Run each workflow's demo section into ``out_dir``; return the report's path.

    The sections write into a temporary folder that replaces ``out_dir`` only when every section
    has succeeded: an interrupted demo leaves the previous ``out_dir`` as it was.
    """
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "report.html").is_file():
        raise InputError(
            f"{out_dir} holds files but no demo report; the demo replaces its output folder as a whole, "
            "so pass a new folder (or the folder of an earlier demo)."
        )
    console = Console(stderr=True)
    report = Report("cellsmith demo")
    report.text(f"Built-in simulated data, seed {seed}. Each section below is one workflow.")
    with atomic_output_dir(out_dir) as tmp:
        for name, section in _sections():
            console.rule(f"demo: {name}")
            section_dir = tmp / name
            section_dir.mkdir()
            report.extend(section(section_dir, seed=seed))
        report.write(tmp / "report.html")
    return out_dir / "report.html"
