"""One reader for every entry point: h5ad, 10x (h5 or mtx folder) and bulk tables.

Every reader records where the data came from in ``adata.uns["cellsmith"]["source"]`` so that
error messages can name the file.
"""

from __future__ import annotations

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


def _looks_numeric(labels: pd.Index) -> bool:
    return pd.to_numeric(pd.Series(labels), errors="coerce").notna().mean() > 0.5


def read_bulk(path: str | Path) -> ad.AnnData:
    """Read bulk RNA-seq as samples x genes.

    ``.h5ad`` files are taken as samples x genes. CSV/TSV tables have gene (or sample) names in
    the first column; since bulk tables are usually shared genes x samples, a table with more
    rows than columns is transposed. The orientation and the reason are logged and stored in
    ``adata.uns["cellsmith"]["orientation"]``.
    """
    path = _existing(path, "bulk file")
    if path.suffix == ".h5ad":
        adata = ad.read_h5ad(path)
        reason = "h5ad files are read as samples x genes"
        return _tag(adata, path, orientation=reason)
    sep = _TABLE_SUFFIXES.get(path.suffix.lower())
    if sep is None:
        raise InputError(
            f"cannot read bulk {path}: unknown format '{path.suffix}'. Pass .h5ad (samples x "
            "genes) or a .csv/.tsv table (first column: gene names)."
        )
    table = pd.read_csv(path, sep=sep, index_col=0)
    non_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise InputError(
            f"bulk table {path} has non-numeric columns {non_numeric[:5]}; keep gene names in "
            "the first column and one numeric column per sample (or the transpose)."
        )
    n_rows, n_cols = table.shape
    if _looks_numeric(table.index):
        raise InputError(
            f"the first column of {path} holds numbers, not names; put gene (or sample) names in "
            "the first column."
        )
    if n_rows >= n_cols:
        reason = (
            f"{n_rows:,} rows x {n_cols:,} columns: rows taken as genes and columns as samples, "
            "because there are more rows than columns (bulk tables are usually genes x samples)"
        )
        table = table.T
    else:
        reason = (
            f"{n_rows:,} rows x {n_cols:,} columns: rows taken as samples and columns as genes, "
            "because there are fewer rows than columns"
        )
    logger.info("read %s: %s", path, reason)
    adata = ad.AnnData(
        X=table.to_numpy(dtype=np.float32),
        obs=pd.DataFrame(index=table.index.astype(str)),
        var=pd.DataFrame(index=table.columns.astype(str)),
    )
    return _tag(adata, path, orientation=reason)
