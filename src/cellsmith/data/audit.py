"""What scale does each matrix hold? The audit and the counts contract.

Raw counts are the source of truth of every cellsmith workflow. :func:`audit` inspects X, every
layer and ``.raw`` and classifies each as one of

``counts``
    non-negative integers;
``normalized``
    non-negative, non-integer and linear (CPM, TPM, library-size normalized);
``log1p``
    non-negative, non-integer, in a log-like range (and, where it holds, rows that sum to a
    constant after ``expm1``);
``scaled``
    negative values present (z-scored, regressed out, ...),

with the evidence. :func:`require_counts` and :func:`require_linear` turn a wrong scale into a
:class:`~cellsmith.errors.ScaleError` that says what was found and what to pass instead.
Everything works block by block on sparse rows: a large sparse matrix is never densified.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellsmith.errors import InputError, ScaleError

Scale = Literal["counts", "normalized", "log1p", "scaled"]

_BLOCK_ROWS = 8192
_INTEGER_TOL = 1e-4
_CONSTANT_ROW_SUM_CV = 1e-3
# log1p(CPM) tops out near 14; a linear scale almost always exceeds this maximum.
_LOG_LIKE_MAX = 25.0


@dataclass
class MatrixAudit:
    """The verdict and evidence for one matrix (X, a layer or .raw.X)."""

    name: str
    scale: Scale
    verdict: str
    n_obs: int
    n_vars: int
    min: float
    max: float
    fraction_integer: float
    n_nan: int
    n_inf: int
    sparsity: float
    row_sum_quantiles: dict[str, float]
    row_sum_cv: float
    expm1_row_sum: float | None
    n_all_zero_genes: int

    def evidence(self) -> str:
        """One line of evidence, as quoted in error messages."""
        q = self.row_sum_quantiles
        parts = [
            f"min {self.min:.4g}",
            f"max {self.max:.4g}",
            f"{100 * self.fraction_integer:.1f}% of non-zero values integer",
            f"row sums {q['q05']:.4g} / {q['q50']:.4g} / {q['q95']:.4g} (5th/50th/95th pct)",
        ]
        if self.n_nan or self.n_inf:
            parts.append(f"{self.n_nan} NaN and {self.n_inf} Inf values")
        return ", ".join(parts)


@dataclass
class AuditReport:
    """Audit of an AnnData: one :class:`MatrixAudit` per matrix plus gene-name checks.

    Attributes
    ----------
    source
        Where the data came from (a path when read by :func:`cellsmith.data.read`).
    matrices
        ``{"X": ..., "layers/<name>": ..., "raw": ...}``.
    duplicated_genes
        Gene names that occur more than once in ``var_names``.
    """

    source: str
    n_obs: int
    n_vars: int
    matrices: dict[str, MatrixAudit]
    duplicated_genes: list[str] = field(default_factory=list)

    @property
    def scale(self) -> Scale:
        """The scale of the first matrix audited (the one asked for, else X)."""
        return next(iter(self.matrices.values())).scale

    def counts_sources(self) -> list[str]:
        """Names of the matrices that hold raw counts."""
        return [name for name, m in self.matrices.items() if m.scale == "counts" and not m.n_nan]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_obs": self.n_obs,
            "n_vars": self.n_vars,
            "duplicated_genes": self.duplicated_genes,
            "matrices": {k: asdict(v) for k, v in self.matrices.items()},
        }

    def write_json(self, path: str | Path) -> None:
        from cellsmith.report.io import write_atomic

        write_atomic(path, lambda tmp: tmp.write_text(json.dumps(self.to_dict(), indent=2)))

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.n_obs:,} obs x {self.n_vars:,} vars"]
        for m in self.matrices.values():
            q = m.row_sum_quantiles
            lines += [
                f"  {m.name}: {m.scale.upper()} — {m.verdict}",
                f"    range [{m.min:.4g}, {m.max:.4g}], {100 * m.fraction_integer:.2f}% of "
                f"non-zeros integer, {100 * m.sparsity:.1f}% zeros, NaN {m.n_nan}, Inf {m.n_inf}",
                f"    library size (row sum) min {q['q00']:.4g}, 5% {q['q05']:.4g}, median "
                f"{q['q50']:.4g}, 95% {q['q95']:.4g}, max {q['q100']:.4g} (CV {m.row_sum_cv:.3g})",
                f"    genes zero in every row: {m.n_all_zero_genes:,}",
            ]
        dup = self.duplicated_genes
        lines.append(
            f"  duplicated gene names: {len(dup)}"
            + (f" (e.g. {', '.join(dup[:5])})" if dup else "")
        )
        return "\n".join(lines)


def describe_source(adata: ad.AnnData) -> str:
    """How to name this AnnData in a message: its file path when known."""
    source = adata.uns.get("cellsmith", {}).get("source") if "cellsmith" in adata.uns else None
    return f"'{source}'" if source else "the AnnData"


def _row_blocks(x) -> Iterator[np.ndarray | sp.csr_matrix]:
    if sp.issparse(x) and not isinstance(x, sp.csr_matrix | sp.csr_array):
        x = sp.csr_matrix(x)
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        yield x[start : start + _BLOCK_ROWS]


def _block_values_and_sums(block) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Stored values (dense: all), their row index, the block's row sums and its zero count."""
    if sp.issparse(block):
        block = sp.csr_matrix(block)
        values = np.asarray(block.data, dtype=np.float64)
        rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        n_zero = block.shape[0] * block.shape[1] - block.nnz + int(np.sum(values == 0))
        return values, rows, block.indices, n_zero
    dense = np.asarray(block, dtype=np.float64)
    rows, cols = np.nonzero(dense)
    return dense[rows, cols], rows, cols, int(dense.size - rows.size)


def _format_target(value: float) -> str:
    exponent = np.log10(value) if value > 0 else 0
    if abs(exponent - round(exponent)) < 0.01:
        return f"1e{int(round(exponent))}"
    return f"{value:.4g}"


def audit_matrix(x, *, name: str = "X") -> MatrixAudit:
    """Classify one matrix (dense, sparse) by scale, with the evidence. See the module doc."""
    n_obs, n_vars = x.shape
    vmin, vmax = np.inf, -np.inf
    n_nonzero = n_integer = n_nan = n_inf = n_zero = 0
    n_expm1_integer = 0
    row_sums = np.zeros(n_obs)
    expm1_sums = np.zeros(n_obs)
    gene_nonzero = np.zeros(n_vars, dtype=np.int64)
    offset = 0
    for block in _row_blocks(x):
        values, rows, cols, block_zeros = _block_values_and_sums(block)
        n_zero += block_zeros
        finite = np.isfinite(values)
        n_nan += int(np.isnan(values).sum())
        n_inf += int(np.isinf(values).sum())
        values, rows, cols = values[finite], rows[finite], cols[finite]
        nz = values != 0
        values, rows, cols = values[nz], rows[nz], cols[nz]
        if values.size:
            vmin, vmax = min(vmin, values.min()), max(vmax, values.max())
            n_nonzero += values.size
            n_integer += int(np.sum(np.abs(values - np.round(values)) < _INTEGER_TOL))
            row_sums[offset : offset + block.shape[0]] = np.bincount(
                rows, weights=values, minlength=block.shape[0]
            )
            if values.max() <= 50:  # expm1 of larger values is not a log1p-scale question
                expm = np.expm1(values)
                expm1_sums[offset : offset + block.shape[0]] = np.bincount(
                    rows, weights=expm, minlength=block.shape[0]
                )
                n_expm1_integer += int(np.sum(np.abs(expm - np.round(expm)) < 1e-2))
            gene_nonzero += np.bincount(cols, minlength=n_vars)
        offset += block.shape[0]
    if n_zero:
        vmin, vmax = min(vmin, 0.0), max(vmax, 0.0)
    if not np.isfinite(vmin):
        vmin = vmax = 0.0
    fraction_integer = n_integer / n_nonzero if n_nonzero else 1.0
    nonempty = row_sums != 0
    quantiles = np.quantile(row_sums, [0, 0.05, 0.5, 0.95, 1]) if n_obs else np.zeros(5)
    row_sum_quantiles = dict(zip(["q00", "q05", "q50", "q95", "q100"], map(float, quantiles), strict=True))

    def _cv(sums: np.ndarray) -> float:
        sums = sums[nonempty]
        return float(sums.std() / sums.mean()) if sums.size and sums.mean() > 0 else float("nan")

    row_sum_cv = _cv(row_sums)
    expm1_cv = _cv(expm1_sums) if vmax <= 50 else float("nan")
    expm1_row_sum = float(np.median(expm1_sums[nonempty])) if expm1_cv < _CONSTANT_ROW_SUM_CV else None

    scale: Scale
    if vmin < 0:
        scale, verdict = "scaled", f"negative values present (min {vmin:.4g}): centred or scaled data"
    elif fraction_integer == 1.0:
        scale, verdict = "counts", "non-negative integers: raw counts"
    elif expm1_row_sum is not None:
        scale = "log1p"
        verdict = f"log1p of normalized data: rows sum to {_format_target(expm1_row_sum)} after expm1"
    elif n_nonzero and n_expm1_integer / n_nonzero > 0.999:
        scale, verdict = "log1p", "log1p of raw counts: expm1 gives integers"
    elif row_sum_cv < _CONSTANT_ROW_SUM_CV:
        scale = "normalized"
        verdict = (
            f"non-integer, linear: rows sum to {_format_target(row_sum_quantiles['q50'])} "
            "(library-size normalized, CPM or TPM)"
        )
    elif vmax <= _LOG_LIKE_MAX:
        scale = "log1p"
        verdict = f"non-integer values in a log-like range (max {vmax:.3g} <= {_LOG_LIKE_MAX:g})"
    else:
        scale = "normalized"
        verdict = f"non-integer, linear range up to {vmax:.4g} (CPM, TPM or other normalized values)"
    return MatrixAudit(
        name=name,
        scale=scale,
        verdict=verdict,
        n_obs=int(n_obs),
        n_vars=int(n_vars),
        min=float(vmin),
        max=float(vmax),
        fraction_integer=float(fraction_integer),
        n_nan=n_nan,
        n_inf=n_inf,
        sparsity=float(n_zero / (n_obs * n_vars)) if n_obs * n_vars else 0.0,
        row_sum_quantiles=row_sum_quantiles,
        row_sum_cv=row_sum_cv,
        expm1_row_sum=expm1_row_sum,
        n_all_zero_genes=int(np.sum(gene_nonzero == 0)),
    )


def _matrix(adata: ad.AnnData, name: str):
    if name == "X":
        return adata.X
    if name == "raw":
        return adata.raw.X
    return adata.layers[name.removeprefix("layers/")]


def _matrix_names(adata: ad.AnnData) -> list[str]:
    names = ["X"] if adata.X is not None else []
    names += [f"layers/{k}" for k in adata.layers]
    if adata.raw is not None:
        names.append("raw")
    return names


def _check_layer(adata: ad.AnnData, layer: str | None) -> str:
    if layer is None or layer == "X":
        if adata.X is None:
            raise InputError(f"{describe_source(adata)} has no X; pass layer= one of {list(adata.layers)}.")
        return "X"
    if layer == "raw":
        if adata.raw is None:
            raise InputError(f"{describe_source(adata)} has no .raw; pass layer= one of {_matrix_names(adata)}.")
        return "raw"
    if layer not in adata.layers:
        raise InputError(
            f"{describe_source(adata)} has no layer '{layer}'; its layers are "
            f"{list(adata.layers) or 'none'} (X holds the main matrix: omit the layer to use it)."
        )
    return f"layers/{layer}"


def audit(adata: ad.AnnData, *, layer: str | None = None) -> AuditReport:
    """Audit the scale of X, every layer and ``.raw`` of ``adata``.

    Parameters
    ----------
    adata
        Cells (or samples) x genes.
    layer
        Audit only this layer (``"X"``, ``"raw"`` or a key of ``.layers``); all when None.

    Returns
    -------
    AuditReport
        One :class:`MatrixAudit` per matrix, in the order X, layers, raw.
    """
    names = [_check_layer(adata, layer)] if layer is not None else _matrix_names(adata)
    matrices = {name: audit_matrix(_matrix(adata, name), name=name) for name in names}
    var_names = adata.var_names
    duplicated = sorted(set(var_names[var_names.duplicated()]))
    return AuditReport(
        source=describe_source(adata).strip("'"),
        n_obs=adata.n_obs,
        n_vars=adata.n_vars,
        matrices=matrices,
        duplicated_genes=[str(g) for g in duplicated],
    )


def _what_to_pass(adata: ad.AnnData, current: str, found: Scale) -> str:
    others = [n for n in _matrix_names(adata) if n != current]
    holding = [n for n in others if audit_matrix(_matrix(adata, n), name=n).scale == "counts"]
    if holding:
        name = holding[0]
        layer = "raw" if name == "raw" else name.removeprefix("layers/")
        return f"{name} does hold raw counts: pass layer='{layer}' (CLI: --counts-layer {layer})."
    advice = (
        "No other matrix holds raw counts: pass the unnormalized UMI/read counts (e.g. Cell "
        "Ranger's filtered_feature_bc_matrix)"
    )
    if found == "log1p":
        advice += (
            ", or, if these are log1p(normalize_total) values and the per-cell total counts are "
            "in .obs, recover them with cellsmith.data.recover_counts(adata, "
            "total_counts_key=...)"
        )
    return advice + "."


def require_counts(adata: ad.AnnData, *, layer: str | None = None):
    """Return the raw-count matrix of ``adata`` (X or ``layer``), or raise a ScaleError.

    Raises
    ------
    ScaleError
        When the matrix is not non-negative integers (or holds NaN/Inf); the message names the
        layer, the scale found with its evidence, and which other layer holds counts.
    InputError
        When ``layer`` does not exist or holds only zeros.
    """
    name = _check_layer(adata, layer)
    x = _matrix(adata, name)
    found = audit_matrix(x, name=name)
    if found.max == 0:  # every cell has library size 0: nothing can be normalised or learned
        raise InputError(
            f"{name} of {describe_source(adata)} holds only zeros ({found.n_obs:,} cells x "
            f"{found.n_vars:,} genes); pass the layer with the counts (--counts-layer)."
        )
    if found.scale == "counts" and not (found.n_nan or found.n_inf):
        return x
    raise ScaleError(
        f"{name} of {describe_source(adata)} must hold raw counts but holds {found.scale.upper()} "
        f"data ({found.verdict}; {found.evidence()}). {_what_to_pass(adata, name, found.scale)}"
    )


def require_linear(adata: ad.AnnData, *, layer: str | None = None) -> tuple[Any, Scale]:
    """Return a matrix on a linear scale (counts or CPM/TPM) and its scale, or raise.

    Mixtures of cells are linear only in count/CPM space, so bulk input to deconvolution must
    be counts or normalized values; log or scaled values are refused.
    """
    name = _check_layer(adata, layer)
    x = _matrix(adata, name)
    found = audit_matrix(x, name=name)
    if found.n_nan or found.n_inf:
        raise ScaleError(
            f"{name} of {describe_source(adata)} holds {found.n_nan} NaN and {found.n_inf} Inf "
            "values; remove or impute them (e.g. set unmeasured genes to 0) before passing it."
        )
    if found.scale in ("counts", "normalized"):
        return x, found.scale
    raise ScaleError(
        f"{name} of {describe_source(adata)} holds {found.scale.upper()} data ({found.verdict}; "
        f"{found.evidence()}), but mixtures of cells are linear only in count/CPM space. Pass raw "
        "counts, CPM or TPM (for log1p data, expm1 it first if you know it was log1p of CPM/TPM)."
    )


def recover_counts(adata: ad.AnnData, *, layer: str | None = None, total_counts_key: str):
    """Recover raw counts from log1p(normalize_total) data whose per-cell totals are in ``.obs``.

    ``counts = expm1(x) / rowsum(expm1(x)) * total``, which is exact when ``x`` is
    ``log1p(normalize_total(counts))`` and ``total`` the cells' raw count totals.

    Returns
    -------
    The integer counts, in the format of the input (sparse stays sparse), as float32.

    Raises
    ------
    ScaleError
        When the recovered values are not integers (the data are not what this assumes).
    """
    from cellsmith.data import normalize

    if total_counts_key not in adata.obs:
        raise InputError(
            f"{describe_source(adata)} has no obs column '{total_counts_key}'; the per-cell total "
            f"counts are needed (obs columns: {list(adata.obs.columns)[:10]})."
        )
    x = _matrix(adata, _check_layer(adata, layer))
    totals = adata.obs[total_counts_key].to_numpy(dtype=np.float64)
    linear = normalize.expm1(x.astype(np.float64) if not sp.issparse(x) else x.astype(np.float64))
    counts = normalize.rescale_to_totals(linear, totals)
    values = counts.data if sp.issparse(counts) else counts
    deviation = np.abs(values - np.round(values))
    worst = float(deviation.max()) if deviation.size else 0.0
    if worst > 0.05:
        raise ScaleError(
            f"recovering counts from {layer or 'X'} of {describe_source(adata)} with totals "
            f"'{total_counts_key}' gives non-integers (largest distance to an integer {worst:.3g}, "
            f"{100 * np.mean(deviation > 0.05):.1f}% of values off by > 0.05); the data are not "
            "log1p(normalize_total(counts)) with these totals. Pass the original raw counts."
        )
    if sp.issparse(counts):
        counts = sp.csr_matrix(counts)
        counts.data = np.round(counts.data)
        counts.eliminate_zeros()
        return counts.astype(np.float32)
    return np.round(counts).astype(np.float32)
