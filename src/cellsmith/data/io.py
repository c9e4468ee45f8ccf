"""One reader for every entry point: h5ad, 10x (h5 or mtx folder), bulk and numeric tables, YAML.

Every failure of a reader (missing, empty, truncated, wrong format, unreadable, not a table, one
column, wrong delimiter) becomes an :class:`~cellsmith.errors.InputError` that names the file and
says what was found there, so that the CLI refuses it with exit 2 before any work starts. Every
AnnData reader records where the data came from in ``adata.uns["cellsmith"]["source"]`` so that
later error messages can name the file.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import anndata as ad
import numpy as np
import pandas as pd

from cellsmith._logging import logger
from cellsmith.errors import GeneSpaceError, InputError

_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_T = TypeVar("_T")


def _tag(adata: ad.AnnData, path: Path, **extra: object) -> ad.AnnData:
    adata.uns.setdefault("cellsmith", {})
    adata.uns["cellsmith"]["source"] = str(path)
    adata.uns["cellsmith"].update(extra)
    return adata


def describe_content(path: Path) -> str:
    """What a file holds, in words, from its first bytes (for error messages)."""
    if path.is_dir():
        return f"a folder of {sum(1 for _ in path.iterdir()):,} entries"
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(_HDF5_SIGNATURE):
        return f"an HDF5 file of {size:,} bytes"
    if head.startswith(b"\x1f\x8b"):
        return f"a gzip file of {size:,} bytes"
    if head.startswith(b"PK\x03\x04"):
        return f"a zip file of {size:,} bytes"
    try:
        first_line = head.decode("utf-8").splitlines()[0] if head.strip() else ""
    except UnicodeDecodeError:
        return f"binary data of {size:,} bytes"
    return f"text of {size:,} bytes starting with {first_line[:60]!r}"


def _existing(path: str | Path, what: str, *, folder: bool = False) -> Path:
    """``path`` when it exists, is readable and (for files) is not empty; InputError otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist; check the path.")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} is not readable by this user; check its permissions.")
    if path.is_dir() and not folder:
        raise InputError(f"{what} {path} is a folder; pass a file.")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{what} {path} is an empty file (0 bytes); it was not written completely.")
    return path


def _reading(path: Path, what: str, kind: str, fix: str, read: Callable[[], _T]) -> _T:
    """Run a third-party reader; any failure of it on this file is an input problem.

    Readers fail on broken files with many types (OSError, KeyError, ValueError, TypeError,
    h5py's own), so everything but running out of memory is turned into an InputError.
    """
    try:
        return read()
    except (InputError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - see the docstring
        raise InputError(
            f"cannot read {what} {path} as {kind}: found {describe_content(path)} "
            f"({type(err).__name__}: {str(err)[:160]}). {fix}"
        ) from err


def require_shape(adata: ad.AnnData, what: str) -> ad.AnnData:
    """Refuse data with zero observations or zero genes (nothing any workflow can compute on)."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"{what} holds {adata.n_obs:,} cells (or samples) x {adata.n_vars:,} genes; "
            "it needs at least one of each. Check the filtering that produced it."
        )
    return adata


def repeated_names(names: Iterable[object]) -> list[str]:
    """The names that occur more than once (as strings, sorted)."""
    index = pd.Index([str(n) for n in names])
    return sorted(index[index.duplicated()].unique())


def require_unique_genes(names: Iterable[object], what: str) -> None:
    """Refuse duplicated gene names, listing them and the two usual fixes.

    Raises
    ------
    GeneSpaceError
        When a name occurs more than once.
    """
    duplicated = repeated_names(names)
    if duplicated:
        shown = ", ".join(duplicated[:10]) + (f" and {len(duplicated) - 10:,} more" if len(duplicated) > 10 else "")
        raise GeneSpaceError(
            f"{what} has {len(duplicated):,} duplicated gene names ({shown}), so genes cannot be "
            "matched by name. Make them unique with `adata.var_names_make_unique()`, or sum the "
            "duplicated genes (e.g. `adata.to_df().T.groupby(level=0).sum().T`) before passing it."
        )


def _require_unique_samples(names: Iterable[object], what: str) -> None:
    """Refuse repeated sample names: proportions and truth are matched by them."""
    repeated = repeated_names(names)
    if repeated:
        raise InputError(
            f"{what} repeats sample names {repeated[:5]}; results are matched to truth by sample "
            "name, so make them unique first (rename the rows of a table; `adata.obs_names_make_unique()`)."
        )


def read_h5ad(path: str | Path, *, what: str = "input file", backed: bool = False) -> ad.AnnData:
    """Read an ``.h5ad`` file (``backed``: X stays on disk), refusing broken and empty ones.

    Raises
    ------
    InputError
        Missing, empty, not HDF5, truncated or not written by anndata, or 0 cells / 0 genes.
    """
    path = _existing(path, what)
    with open(path, "rb") as handle:
        if handle.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
            raise InputError(
                f"{what} {path} is not an .h5ad (HDF5) file: found {describe_content(path)}. "
                "Pass a file written by anndata's write_h5ad."
            )
    fix = "The file may be truncated (an interrupted copy or write); write it again with `adata.write_h5ad`."
    adata = _reading(path, what, ".h5ad", fix, lambda: ad.read_h5ad(path, backed="r" if backed else None))
    return require_shape(adata, f"{what} {path}")


def read(path: str | Path, *, orientation: str = "auto") -> ad.AnnData:
    """Read cells x genes from ``.h5ad``, a 10x ``.h5`` file, a 10x matrix folder or a table
    (a table through :func:`read_bulk` with ``orientation``).

    Raises
    ------
    InputError
        When the path does not exist, cannot be read in its format, or holds no cells or genes.
    """
    path = _existing(path, "input file", folder=True)
    if path.is_dir():
        import scanpy as sc

        found = sorted(p.name for p in path.iterdir())
        if not any(name.startswith("matrix.mtx") for name in found):
            raise InputError(
                f"folder {path} is not a 10x matrix folder: it holds {found[:8] or 'nothing'}; "
                "expected matrix.mtx(.gz), features.tsv(.gz) / genes.tsv and barcodes.tsv(.gz)."
            )
        fix = "Check that matrix, features and barcodes come from the same 10x run."
        adata = _reading(path, "10x folder", "a 10x matrix folder", fix, lambda: sc.read_10x_mtx(path))
    elif path.suffix == ".h5ad":
        return _tag(read_h5ad(path), path)
    elif path.suffix == ".h5":
        import scanpy as sc

        fix = "Pass a 10x Cell Ranger .h5 (filtered_feature_bc_matrix.h5)."
        adata = _reading(path, "input file", "a 10x .h5 file", fix, lambda: sc.read_10x_h5(path))
    elif path.suffix.lower() in _TABLE_SUFFIXES:
        return read_bulk(path, orientation)
    else:
        raise InputError(
            f"cannot read {path}: unknown format '{path.suffix}'. Pass .h5ad, a 10x .h5 file, "
            "a 10x matrix folder, or a .csv/.tsv table."
        )
    return _tag(require_shape(adata, f"input {path}"), path)


def read_yaml(path: str | Path, what: str) -> object:
    """Parse a YAML file (None when it is empty); InputError naming the line of a syntax error."""
    import yaml

    path = _existing(path, what)
    try:
        return yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not a text file: found {describe_content(path)}.") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(
            f"{what} {path} is not valid YAML{line} ({getattr(err, 'problem', None) or err}); "
            "write one `key: value` per line."
        ) from None


ORIENTATIONS = ("auto", "samples-by-genes", "genes-by-samples")
"""Values of ``read_bulk(orientation=)`` and of the CLI's ``--orientation``."""

# Gene identifiers as they appear in bulk tables: Ensembl ids (human/mouse, optional version) and
# HGNC/MGI-like symbols. Sample names rarely match these and never overlap a model's genes, which
# is why the evidence is tried in that order before the shape.
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9]*([-.][A-Za-z0-9]+)*$")
_SAMPLE_LIKE = re.compile(
    r"^(GSM|SRR|ERR|DRR|SAMN|sample|donor|patient)[-_ .]?\w*$|^(s|bulk|rep|r)[-_ .]?\d+$", re.IGNORECASE
)


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


def _sniff_separator(path: Path, head: str) -> str:
    """The column separator of a text table, whatever its suffix (a .txt may be comma-separated).

    A separator that occurs on every line of the head about equally often wins (the header may
    have one field fewer: R's ``write.table`` leaves the name column's header out); then
    ``csv.Sniffer``'s guess; then what the suffix promises.
    """
    lines = [line for line in head.splitlines()[:50] if line.strip()]
    if len(lines) > 1 and not head.endswith("\n"):
        lines = lines[:-1]  # the head may end inside a line
    counts = {sep: [line.count(sep) for line in lines] for sep in ",\t;"}
    steady = {sep: min(c) for sep, c in counts.items() if c and min(c) > 0 and max(c) - min(c) <= 1}
    if steady:
        return max(steady, key=steady.get)
    try:
        return csv.Sniffer().sniff(head, delimiters=",\t;").delimiter
    except csv.Error:
        return _TABLE_SUFFIXES.get(path.suffix.lower(), ",")


def read_table(path: str | Path, what: str = "table") -> pd.DataFrame:
    """A numeric table with names in its first column and in its header (separator sniffed).

    Raises
    ------
    InputError
        Missing, empty, binary, ragged, a single column (names only, or a wrong separator),
        non-numeric or missing values, numbers instead of names in the first column, duplicated
        column names.
    """
    path = _existing(path, what)
    try:
        with open(path, newline="") as handle:
            head = handle.read(64 * 1024)
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not a text table: found {describe_content(path)}.") from None
    if not head.strip():
        raise InputError(f"{what} {path} holds only blank lines; expected a header and one row per name.")
    sep = _sniff_separator(path, head)
    shown = {",": "comma", "\t": "tab", ";": "semicolon"}[sep]
    header = next(csv.reader([head.splitlines()[0]], delimiter=sep))
    repeated = repeated_names(header[1:])
    if repeated:
        raise InputError(
            f"{what} {path} repeats column names {repeated[:10]}; "
            "make them unique (or sum the duplicated columns) first."
        )
    try:
        table = pd.read_csv(path, sep=sep, index_col=0)
    except pd.errors.ParserError as err:
        raise InputError(
            f"{what} {path} is not a {shown}-separated table: its rows have different numbers of "
            f"fields ({str(err).strip()[:120]})."
        ) from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{what} {path} holds no table; expected a header and one row per name.") from None
    found = f"found {table.shape[0]:,} rows x {table.shape[1]:,} value columns with {shown} as separator"
    if table.shape[1] == 0 or table.shape[0] == 0:
        raise InputError(
            f"{what} {path} has no values: {found} (first line {head.splitlines()[0][:60]!r}). "
            "Expected names in the first column and one "
            "numeric column per sample (comma-, tab- or semicolon-separated)."
        )
    non_numeric = [str(c) for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise InputError(
            f"{what} {path} has non-numeric columns {non_numeric[:5]} ({found}); keep names in the "
            "first column and numbers in the others."
        )
    if _looks_numeric(table.index):
        raise InputError(
            f"the first column of {what} {path} holds numbers, not names; put gene (or sample) names "
            "in the first column."
        )
    n_missing = int(table.isna().to_numpy().sum())
    if n_missing:
        raise InputError(
            f"{what} {path} has {n_missing:,} empty or NA values (e.g. in column "
            f"'{table.columns[table.isna().any()][0]}'); fill them (0 for unexpressed genes) first."
        )
    table.index = table.index.astype(str)
    table.columns = table.columns.astype(str)
    return table


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

    Raises
    ------
    InputError
        On every failure of :func:`read_h5ad` or :func:`read_table`.
    GeneSpaceError
        When a gene name occurs twice.
    """
    if orientation not in ORIENTATIONS:
        raise InputError(f"--orientation {orientation!r} is not one of {', '.join(ORIENTATIONS)}.")
    path = Path(path)
    if path.suffix == ".h5ad":
        adata = read_h5ad(path, what="bulk file")
        if orientation == "genes-by-samples":
            adata, reason = adata.T.copy(), "h5ad transposed: --orientation genes-by-samples"
        else:
            reason = "h5ad files are read as samples x genes"
        require_unique_genes(adata.var_names, f"bulk file {path}")
        _require_unique_samples(adata.obs_names, f"bulk file {path}")
        return _tag(adata, path, orientation=reason)
    if path.suffix.lower() not in _TABLE_SUFFIXES:
        _existing(path, "bulk file")
        raise InputError(
            f"cannot read bulk {path}: unknown format '{path.suffix}'. Pass .h5ad (samples x "
            "genes) or a .csv/.tsv/.txt table (first column: gene names)."
        )
    table = read_table(path, "bulk table")
    if orientation == "auto":
        rows_are_genes, reason = _decide_orientation(table, genes)
    else:
        rows_are_genes = orientation == "genes-by-samples"
        reason = f"--orientation {orientation}"
    if rows_are_genes:
        table = table.T
    logger.info("read %s: %s", path, reason)
    require_unique_genes(table.columns, f"bulk table {path} ({reason})")
    _require_unique_samples(table.index, f"bulk table {path} ({reason})")
    adata = ad.AnnData(
        X=table.to_numpy(dtype=np.float32),
        obs=pd.DataFrame(index=table.index),
        var=pd.DataFrame(index=table.columns),
    )
    return _tag(adata, path, orientation=reason)
