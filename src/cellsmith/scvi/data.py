"""The AnnData contract of the conditional scVI: keys, category mappings, count rows, batches.

:class:`DataSetup` records which layer holds the counts, which obs columns are the batch, the
covariates and the perturbation, and the categories seen in training; it is saved with the
model and re-applied to new data, where an unseen category or a different gene set is an error.
Counts stay sparse (:class:`~cellsmith.data.rows.CountRows`, in memory or backed) and category
codes stay integers per cell; a batch's dense counts and one-hots are built when it is taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from cellsmith.data import GeneSpace, normalize
from cellsmith.data.audit import describe_source
from cellsmith.data.rows import CountRows, count_rows
from cellsmith.errors import InputError
from cellsmith.nn.batches import dense_batch

#: Category of the single batch when no batch key is given.
SINGLE_BATCH = "all"


@dataclass
class DataSetup:
    """Keys and category mappings of a trained model (JSON-serialisable; ``setup.json``).

    Attributes
    ----------
    batch_key
        obs column of the batch (donor); None for one batch.
    covariate_keys
        Other categorical obs columns given to encoder and decoder (e.g. ``timepoint``).
    perturbation_key, control_label
        Perturbation mode: obs column of the perturbation and its control label; the
        perturbation is given to the decoder only.
    match_key
        In perturbation mode, perturbed cells are paired with control cells of the same batch
        and, when set, the same value of this obs column (e.g. ``cell_type``).
    counts_layer
        Layer holding raw counts (None: X).
    categories
        For each key, its categories in code order.
    always_zero_genes
        Genes with zero counts in every training cell.
    """

    batch_key: str | None
    covariate_keys: list[str]
    perturbation_key: str | None = None
    control_label: str | None = None
    match_key: str | None = None
    counts_layer: str | None = None
    categories: dict[str, list[str]] = field(default_factory=dict)
    always_zero_genes: list[str] = field(default_factory=list)

    @property
    def encoder_keys(self) -> list[str]:
        """Keys whose one-hots the encoder sees (batch and covariates, never the perturbation)."""
        return [self.batch_column, *self.covariate_keys]

    @property
    def decoder_keys(self) -> list[str]:
        """Keys whose one-hots the decoder sees."""
        return self.encoder_keys + ([self.perturbation_key] if self.perturbation_key else [])

    @property
    def batch_column(self) -> str:
        return self.batch_key or "_batch"

    def required_columns(self) -> list[str]:
        keys = [self.batch_key, *self.covariate_keys, self.perturbation_key, self.match_key]
        return [k for k in keys if k is not None]


@dataclass
class CellData:
    """A set of cells in a model's gene order: counts read by rows, category codes per cell.

    ``counts`` stays CSR in memory (or is read from a backed h5ad); a batch is densified only
    when it is taken. ``codes`` holds the integer category code of each key per cell (N,).
    """

    counts: CountRows
    codes: dict[str, np.ndarray]

    @property
    def n_cells(self) -> int:
        return self.counts.n_rows


def check_columns(adata: ad.AnnData, keys: Sequence[str]) -> None:
    """InputError naming the first obs column of ``keys`` that ``adata`` lacks."""
    for key in keys:
        if key not in adata.obs:
            raise InputError(
                f"{describe_source(adata)} has no obs column '{key}' (columns: "
                f"{list(adata.obs.columns)[:15]}). Pass the right key, or add the column."
            )


def observed_categories(adata: ad.AnnData, setup: DataSetup) -> dict[str, list[str]]:
    """Sorted categories of every key in ``adata`` (the single batch when batch_key is None)."""
    check_columns(adata, setup.required_columns())
    categories = {setup.batch_column: [SINGLE_BATCH]}
    for key in setup.required_columns():
        categories[key] = sorted(adata.obs[key].astype(str).unique())
    if setup.perturbation_key is not None and setup.control_label not in categories[setup.perturbation_key]:
        raise InputError(
            f"control label '{setup.control_label}' does not occur in obs column "
            f"'{setup.perturbation_key}' of {describe_source(adata)} (values: "
            f"{categories[setup.perturbation_key][:10]}); pass --control-label with one of them."
        )
    return categories


def category_codes(
    adata: ad.AnnData, setup: DataSetup, overrides: Mapping[str, str] | None = None
) -> dict[str, np.ndarray]:
    """Integer codes of every key under the saved mappings; ``overrides`` replace a key's value.

    Raises
    ------
    InputError
        On a missing column, an unknown key in ``overrides`` or a category not seen in training.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(setup.decoder_keys))
    if unknown:
        known = [k for k in setup.decoder_keys if k != "_batch"]
        raise InputError(f"cannot set {unknown}: the model is conditioned on {known} only.")
    check_columns(adata, [k for k in setup.required_columns() if k not in overrides])
    codes = {}
    for key in [*setup.decoder_keys, *([setup.match_key] if setup.match_key else [])]:
        known = setup.categories[key]
        if key in overrides:
            values = np.full(adata.n_obs, str(overrides[key]), dtype=object)
        elif key == "_batch":
            values = np.full(adata.n_obs, SINGLE_BATCH, dtype=object)
        else:
            values = adata.obs[key].astype(str).to_numpy()
        index = pd.Index(known)
        code = index.get_indexer(values)
        if (code < 0).any():
            unseen = sorted(set(values[code < 0]))
            where = f"the value set for '{key}'" if key in overrides else f"obs column '{key}'"
            raise InputError(
                f"{where} holds categories not seen in training: {unseen[:10]} "
                f"(the model knows {known[:15]}). Predict only for known categories or retrain."
            )
        codes[key] = code
    return codes


def one_hot(
    codes: Mapping[str, np.ndarray],
    keys: Sequence[str],
    categories: Mapping[str, list[str]],
    rows: np.ndarray,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(len(rows), sum of category counts) float32 one-hot block of ``keys`` for the cells ``rows``
    (built per batch: the codes are kept per cell, never a one-hot block of all cells)."""
    rows = torch.as_tensor(np.asarray(rows), dtype=torch.int64)
    blocks = [torch.zeros(rows.numel(), 0)]
    for key in keys:
        code = torch.from_numpy(np.asarray(codes[key], dtype=np.int64))[rows]
        blocks.append(F.one_hot(code, len(categories[key])).float())
    return torch.cat(blocks, dim=1).to(device)


def aligned_rows(adata: ad.AnnData, genespace: GeneSpace, counts_layer: str | None) -> CountRows:
    """Raw counts of ``adata`` read by rows in the gene order of ``genespace`` (nothing densified).

    Works on an AnnData in memory and on one opened backed (:func:`cellsmith.data.rows.read_backed`).

    Raises
    ------
    ScaleError
        When the matrix is not raw counts (e.g. log-normalised data).
    GeneSpaceError
        When a gene of the model's gene space is absent from ``adata``.
    """
    rows = count_rows(adata, layer=counts_layer)
    # Align a cell-less copy of the gene names: the same checks and messages as aligning data.
    genespace.align(ad.AnnData(var=pd.DataFrame(index=adata.var_names)), missing="error", min_overlap=1.0)
    source_to_space = genespace.index_map(adata.var_names)
    present = np.flatnonzero(source_to_space >= 0)
    columns = np.empty(len(genespace), dtype=np.int64)
    columns[source_to_space[present]] = present
    if adata.n_vars != len(genespace) or not np.array_equal(columns, np.arange(len(genespace))):
        rows.columns = columns
    return rows


def zero_columns(counts: CountRows) -> np.ndarray:
    """(n_columns,) True for columns with no count in any row (read block by block)."""
    totals = np.zeros(counts.shape[1])
    for _, block in counts.blocks():
        totals += np.asarray(block.sum(axis=0)).ravel()
    return totals == 0


def dense_inputs(
    rows: sp.csr_matrix, source_rows: sp.csr_matrix | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, x_log, library)`` of one batch on ``device``: its counts densified there, the encoder
    input :func:`normalize.log1p_normalize` of the source cells' counts (``rows`` themselves
    when ``source_rows`` is None) and each cell's total count."""
    x = dense_batch(rows, device)
    source = x if source_rows is None else dense_batch(source_rows, device)
    return x, normalize.log1p_normalize(source), x.sum(1)
