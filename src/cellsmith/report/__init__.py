"""Figures and one self-contained HTML page per run, shared by every workflow."""

from cellsmith.report.html import Report
from cellsmith.report.io import atomic_output_dir, write_atomic, write_atomic_files

__all__ = ["Report", "atomic_output_dir", "write_atomic", "write_atomic_files"]
