"""One reader for every entry point: h5ad, 10x (h5 or mtx folder) and bulk tables.

Every reader records where the data came from in ``adata.uns["cellsmith"]["source"]`` so that
error messages can name the file.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellsmith._logging import logger
from cellsmith.errors import InputError

_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


def _tag(adata: ad.AnnData, path: Path, **extra: object) -> ad.AnnData:
    adata.uns.setdefault("cellsmith", {})
    adata.uns["cellsmith"]["source"] = str(path)
    adata.uns["cellsmith"].update(extra)
    return adata


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; check the path.")
    return path


def read(path: str | Path) -> ad.AnnData:
    """Read cells x genes from ``.h5ad``, a 10x ``.h5`` file or a 10x matrix folder.

    Raises
    ------
    InputError
        When the path does not exist or the format is not one of these.
    """
    path = _existing(path, "input file")
    if path.is_dir():
        import scanpy as sc

        adata = sc.read_10x_mtx(path)
    elif path.suffix == ".h5ad":
        adata = ad.read_h5ad(path)
    elif path.suffix == ".h5":
        import scanpy as sc

        adata = sc.read_10x_h5(path)
    elif path.suffix.lower() in _TABLE_SUFFIXES:
        return read_bulk(path)
    else:
        raise InputError(
            f"cannot read {path}: unknown format '{path.suffix}'. Pass .h5ad, a 10x .h5 file, "
            "a 10x matrix folder, or a .csv/.tsv table."
        )
    return _tag(adata, path)


ORIENTATIONS = ("auto", "samples-by-genes", "genes-by-samples")
"""Values of ``read_bulk(orientation=)`` and of the CLI's ``--orientation``."""

# Gene identifiers as they appear in bulk tables: Ensembl ids (human/mouse, optional version) and
# HGNC/MGI-like symbols. Sample names rarely match these and never overlap a model's genes, which
# is why the evidence is tried in that order before the shape.
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9]*([-.][A-Za-z0-9]+)*$")
_SAMPLE_LIKE = re.compile(r"^(GSM|SRR|ERR|DRR|SAMN|sample|donor|patient)[-_ .]?\w*$", re.IGNORECASE)


def _looks_numeric(labels: pd.Index) -> bool:
    return pd.to_numeric(pd.Series(labels), errors="coerce").notna().mean() > 0.5


def _gene_likeness(labels: pd.Index) -> float:
    """Fraction of labels that look like gene identifiers and not like sample names."""
    names = pd.Series(labels.astype(str))
    if names.empty:
        return 0.0
    ensembl = names.str.match(_ENSEMBL)
    symbol = names.str.match(_SYMBOL) & ~names.str.match(_SAMPLE_LIKE)
    return float((ensembl | symbol).mean())


def _decide_orientation(table: pd.DataFrame, genes: Sequence[str] | None) -> tuple[bool, str]:
    """Whether the rows of ``table`` are genes, and the evidence used (``auto`` orientation).

    Evidence in order: overlap of each axis with the model's ``genes``, then gene-like names
    (Ensembl ids, symbols, not GSM/SRR/sample ids), then the shape (bulk tables are usually
    genes x samples, so more rows than columns means rows are genes).
    """
    rows, cols = table.index.astype(str), table.columns.astype(str)
    shape = f"{len(rows):,} rows x {len(cols):,} columns"
    if genes is not None:
        known = set(genes)
        in_rows, in_cols = rows.isin(known).sum(), cols.isin(known).sum()
        if in_rows != in_cols:
            rows_are_genes = in_rows > in_cols
            axis, n = ("rows", in_rows) if rows_are_genes else ("columns", in_cols)
            return rows_are_genes, f"{shape}: {axis} taken as genes because {n:,} of them are the model's genes"
    like_rows, like_cols = _gene_likeness(rows), _gene_likeness(cols)
    if abs(like_rows - like_cols) >= 0.5:
        rows_are_genes = like_rows > like_cols
        axis, share = ("rows", like_rows) if rows_are_genes else ("columns", like_cols)
        return rows_are_genes, f"{shape}: {axis} taken as genes because {share:.0%} of their names look like gene ids"
    if len(rows) >= len(cols):
        return True, (
            f"{shape}: rows taken as genes and columns as samples, because there are more rows than "
            "columns (bulk tables are usually genes x samples)"
        )
    return False, f"{shape}: rows taken as samples and columns as genes, because there are fewer rows than columns"


def _sniff_separator(path: Path) -> str:
    """The column separator of a text table, whatever its suffix (a .txt may be comma-separated)."""
    with open(path, newline="", errors="replace") as handle:
        head = handle.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(head, delimiters=",\t;").delimiter
    except csv.Error:
        # One column or an ambiguous head: fall back to what the suffix promises.
        return _TABLE_SUFFIXES[path.suffix.lower()]


def read_bulk(
    path: str | Path, orientation: str = "auto", genes: Sequence[str] | None = None
) -> ad.AnnData:
    """Read bulk RNA-seq as samples x genes.

    Parameters
    ----------
    path
        ``.h5ad`` (samples x genes) or a CSV/TSV/TXT table with names in the first column; the
        separator is sniffed from the file, not taken from the suffix.
    orientation
        ``samples-by-genes``, ``genes-by-samples`` or ``auto``: decided from overlap with
        ``genes``, then gene-like names, then shape. The decision and its evidence are logged and
        stored in ``adata.uns["cellsmith"]["orientation"]``.
    genes
        The genes of the model the bulk is for (evidence for ``auto``).
    """
    if orientation not in ORIENTATIONS:
        raise InputError(f"--orientation {orientation!r} is not one of {', '.join(ORIENTATIONS)}.")
    path = _existing(path, "bulk file")
    if path.suffix == ".h5ad":
        adata = ad.read_h5ad(path)
        if orientation == "genes-by-samples":
            return _tag(adata.T.copy(), path, orientation="h5ad transposed: --orientation genes-by-samples")
        return _tag(adata, path, orientation="h5ad files are read as samples x genes")
    if path.suffix.lower() not in _TABLE_SUFFIXES:
        raise InputError(
            f"cannot read bulk {path}: unknown format '{path.suffix}'. Pass .h5ad (samples x "
            "genes) or a .csv/.tsv/.txt table (first column: gene names)."
        )
    table = pd.read_csv(path, sep=_sniff_separator(path), index_col=0)
    non_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise InputError(
            f"bulk table {path} has non-numeric columns {non_numeric[:5]}; keep gene names in "
            "the first column and one numeric column per sample (or the transpose)."
        )
    if _looks_numeric(table.index):
        raise InputError(
            f"the first column of {path} holds numbers, not names; put gene (or sample) names in "
            "the first column."
        )
    if orientation == "auto":
        rows_are_genes, reason = _decide_orientation(table, genes)
    else:
        rows_are_genes = orientation == "genes-by-samples"
        reason = f"--orientation {orientation}"
    if rows_are_genes:
        table = table.T
    logger.info("read %s: %s", path, reason)
    adata = ad.AnnData(
        X=table.to_numpy(dtype=np.float32),
        obs=pd.DataFrame(index=table.index.astype(str)),
        var=pd.DataFrame(index=table.columns.astype(str)),
    )
    return _tag(adata, path, orientation=reason)
