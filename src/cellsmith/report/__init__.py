"""Figures and one self-contained HTML page per run, shared by every workflow."""

from cellsmith.report.html import Report
from cellsmith.report.io import atomic_output_dir, write_atomic

__all__ = ["Report", "atomic_output_dir", "write_atomic"]
