"""mRNA per cell in real bulk: from the reference's cell fractions to the bulk's.

HP-VADE learns cell fractions from pseudo-bulks of reference cells, so a type's weight in the
mixture is its number of cells times its counts per cell *in the single-cell reference*. In a
real bulk library the weight is the type's mRNA per cell, which a 10x 3' reference reflects
poorly: in the sorted Zheng 2017 PBMCs a monocyte has 1.4x the UMIs of a T cell, while
monocytes carry about 3.6x the mRNA of lymphocytes (Racle et al. 2017, eLife 6:e26476, who
measured mRNA per cell of sorted immune cells for EPIC). Cell fractions of a real bulk are
therefore the model's fractions re-weighted by ``counts per cell in the reference / mRNA per
cell in the bulk``:

    p_bulk[t] ∝ p_model[t] * reference_counts[t] / bulk_mrna[t]

Settings (``DeconvolutionConfig.bulk_mrna_content``, ``--mrna-content``):

- ``immune`` (default): the measured values below, matched to the reference's type names; a
  type that matches none (dendritic cells, platelets) gets :data:`DEFAULT_MRNA`, as EPIC does,
  with a warning; when most types match none (not an immune reference), nothing is re-weighted;
- ``reference``: no re-weighting: right for pseudo-bulks made from the reference's own cells;
- a mapping ``cell type -> mRNA per cell`` (relative; every type of the model, and optionally
  ``unknown``).

The ``unknown`` fraction is first estimated as a share of the bulk's reads; with mRNA weights it
becomes a share of cells whose mRNA per cell is ``unknown_mrna`` (default: :data:`DEFAULT_MRNA`, a
typical cell, as EPIC assumes for "other cells"; the table's ``unknown`` entry; 0.13 suits
neutrophils in whole blood). Without weights the unknown cells carry the known cells' mean.

Measured on the shared real sets (``benchmarks/deconvolution_real.py --seeds 0,1,2``, adapted, with
the unknown): hoek2015 PBMC pooled CCC 0.82 -> 0.975 (mean of 3 seeds); the monocytes' level bias
fell on the three sets that measure them (hoek2015 +0.19 -> +0.01).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellsmith._logging import logger
from cellsmith.data.io import read_table, read_yaml
from cellsmith.errors import ConfigError, InputError

IMMUNE, REFERENCE = "immune", "reference"
#: Key of the unknown cells' mRNA per cell in a content table.
UNKNOWN_KEY = "unknown"


@dataclass
class BulkContent:
    """mRNA per cell in the bulk: ``types`` ``(n_types,)`` in the model's order, and ``unknown``
    for the cells the reference lacks (None: the known cells' mean), on the same scale."""

    types: np.ndarray
    unknown: float | None = None


#: Relative mRNA per cell of immune types, measured by Racle et al. 2017 (Table in EPIC's
#: ``mRNA_cell_default``), keyed by a pattern matched against a lower-cased type name whose
#: separators (space, _, -, ., +) are single spaces. The first matching pattern wins: the
#: order puts specific names (``nk t``) before general ones.
IMMUNE_MRNA_PER_CELL: tuple[tuple[str, float], ...] = (
    (r"\bnk ?t\b", 0.3952),  # NKT cells: T cells
    (r"\b(mono\w*|macrophage\w*|cd14|cd16 mono|fcgr3a)\b", 1.4196),
    (r"\b(neutrophil\w*|neu|granulocyte\w*|pmn)\b", 0.1300),
    (r"\b(nk|natural killer)\b", 0.4396),
    (r"\b(b|bcells?|b ?cells?|b lymphocytes?|plasma\w*)\b", 0.4016),
    (r"\b(t|tcells?|t ?cells?|cd4|cd8|cd4 ?t|cd8 ?t|treg|tregs|thelper|th\d*|t lymphocytes?)\b", 0.3952),
)
#: mRNA per cell of a type the table lacks (EPIC's default: about a lymphocyte's).
DEFAULT_MRNA = 0.4


def _positive(value: float, what: str) -> float:
    """``value`` as a float; ConfigError naming ``what`` unless it is finite and > 0."""
    if not (np.isfinite(value) and value > 0):
        raise ConfigError(f"{what} must be a positive mRNA per cell, found {value}.")
    return float(value)


def _normalised(name: str) -> str:
    return re.sub(r"[\s_\-.+/]+", " ", str(name).lower()).strip()


def immune_content(cell_types: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Measured mRNA per cell of each type by name (:data:`DEFAULT_MRNA` where no pattern
    matches), and the types no pattern matched."""
    values, unmatched = [], []
    for cell_type in cell_types:
        name = _normalised(cell_type)
        value = next((v for pattern, v in IMMUNE_MRNA_PER_CELL if re.search(pattern, name)), None)
        if value is None:
            unmatched.append(str(cell_type))
        values.append(DEFAULT_MRNA if value is None else value)
    return np.asarray(values, dtype=np.float64), unmatched


def bulk_content(
    cell_types: Sequence[str], setting: str | Mapping[str, float], *, source: str = "bulk_mrna_content"
) -> np.ndarray | None:
    """``(n_types,)`` mRNA per cell in the bulk, or None to keep the reference's counts.

    Raises
    ------
    ConfigError
        An unknown setting, or a mapping that misses a type or has a value <= 0.
    """
    if isinstance(setting, str):
        if setting == REFERENCE:
            return None
        if setting != IMMUNE:
            raise ConfigError(
                f"{source}: {setting!r} is not a setting; use '{IMMUNE}', '{REFERENCE}' or a table of "
                "cell type -> mRNA per cell."
            )
        values, unmatched = immune_content(cell_types)
        if 2 * len(unmatched) > len(cell_types):
            # Mostly other names (a tissue, or labels such as A/B/C where "B" matching is chance).
            logger.info(
                "most cell types have no measured mRNA per cell (%s): the reference's counts per cell "
                "weight the types (--mrna-content FILE gives one value per type)",
                ", ".join(unmatched),
            )
            return None
        if unmatched:
            logger.warning(
                "no measured mRNA per cell for %s: %g used (a lymphocyte's); give --mrna-content FILE "
                "with one value per cell type to set them",
                ", ".join(unmatched), DEFAULT_MRNA,
            )
        return values
    table = {str(k): v for k, v in setting.items()}
    missing = [t for t in cell_types if t not in table]
    if missing:
        raise ConfigError(
            f"{source}: no value for {', '.join(missing)}; give a positive mRNA per cell for every cell "
            f"type of the model ({', '.join(cell_types)})."
        )
    return np.asarray([_positive(table[t], f"{source} of {t}") for t in cell_types], dtype=np.float64)


def unknown_mrna_for(setting: str | Mapping[str, float], override: float | None = None) -> float | None:
    """The unknown cells' mRNA per cell for ``setting``: ``override``, else :data:`DEFAULT_MRNA`
    with ``immune``, the table's ``unknown`` entry, or None (the known cells' mean)."""
    if override is not None:
        return _positive(override, "unknown_mrna")
    if isinstance(setting, str):
        return DEFAULT_MRNA if setting == IMMUNE else None
    value = {str(k): v for k, v in setting.items()}.get(UNKNOWN_KEY)
    return None if value is None else _positive(value, f"bulk_mrna_content's '{UNKNOWN_KEY}' entry")


def unknown_cells(read_share: np.ndarray, proportions: np.ndarray, content: BulkContent) -> np.ndarray:
    """The unknown's share of reads -> share of cells: its cells carry ``content.unknown`` mRNA,
    the known cells ``proportions @ content.types`` (unchanged when ``content.unknown`` is None)."""
    read_share = np.asarray(read_share, dtype=np.float64)
    if content.unknown is None:
        return read_share
    unknown = read_share / content.unknown
    known = (1.0 - read_share) / (np.asarray(proportions, dtype=np.float64) @ content.types)
    return np.divide(unknown, unknown + known, out=np.zeros_like(unknown), where=unknown + known > 0)


def reweight(proportions: np.ndarray, reference_counts: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Cell fractions under the reference's counts per cell -> under the bulk's mRNA per cell
    (rows sum to 1)."""
    weighted = np.asarray(proportions, dtype=np.float64) * (np.asarray(reference_counts) / content)
    totals = weighted.sum(axis=1, keepdims=True)
    return np.divide(weighted, totals, out=np.zeros_like(weighted), where=totals > 0)


def content_setting(value: str | None) -> str | dict[str, float] | None:
    """The ``--mrna-content`` value: ``immune``, ``reference``, or a file (YAML ``type: value``,
    or a CSV/TSV with types in its first column and the values in its only other column); None
    (not given) stays None.

    Raises
    ------
    InputError
        An unreadable file, or a table with more than one value column.
    ConfigError
        A YAML file that is not a mapping of names to numbers.
    """
    if value is None or value in (IMMUNE, REFERENCE):
        return value
    path = Path(value)
    what = "--mrna-content file"
    if path.suffix.lower() in (".yaml", ".yml"):
        table = read_yaml(path, what)
        if not isinstance(table, dict) or not all(isinstance(v, (int, float)) for v in table.values()):
            raise ConfigError(f"{what} {path} must map each cell type to a number (`CD4 T: 0.4`), found {table!r:.80}.")
        return {str(k): float(v) for k, v in table.items()}
    frame = read_table(path, what)
    if frame.shape[1] != 1:
        raise InputError(
            f"{what} {path} has {frame.shape[1]} value columns; expected cell types in the first column "
            "and their mRNA per cell in the second."
        )
    return {str(k): float(v) for k, v in frame.iloc[:, 0].items()}
