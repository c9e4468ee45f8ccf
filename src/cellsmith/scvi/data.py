"""The AnnData contract of the conditional scVI: keys, category mappings, tensors.

:class:`DataSetup` records which layer holds the counts, which obs columns are the batch, the
covariates and the perturbation, and the categories seen in training; it is saved with the
model and re-applied to new data, where an unseen category or a different gene set is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellsmith.data import GeneSpace, normalize, require_counts
from cellsmith.data.audit import describe_source
from cellsmith.errors import InputError

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
class EncodedData:
    """Dense tensors of a set of cells in a model's gene order (rows = cells).

    ``x`` (N, G) counts; ``x_log`` (N, G) their log1p(CP10k); ``library`` (N,) total counts;
    ``codes`` the integer category code of each key per cell.
    """

    x: torch.Tensor
    x_log: torch.Tensor
    library: torch.Tensor
    codes: dict[str, np.ndarray]

    @property
    def n_cells(self) -> int:
        return self.x.shape[0]


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


def one_hot(codes: Mapping[str, np.ndarray], keys: Sequence[str], categories: Mapping[str, list[str]]) -> torch.Tensor:
    """(N, sum of category counts) float32 one-hot block of ``keys``."""
    n = len(next(iter(codes.values())))
    blocks = [np.zeros((n, 0), dtype=np.float32)]
    for key in keys:
        block = np.zeros((n, len(categories[key])), dtype=np.float32)
        block[np.arange(n), codes[key]] = 1.0
        blocks.append(block)
    return torch.from_numpy(np.concatenate(blocks, axis=1))


def aligned_counts(adata: ad.AnnData, genespace: GeneSpace, counts_layer: str | None) -> np.ndarray:
    """Raw counts of ``adata`` in the gene order of ``genespace`` as a dense float32 array.

    Raises
    ------
    ScaleError
        When the matrix is not raw counts (e.g. log-normalised data).
    GeneSpaceError
        When a gene of the model's gene space is absent from ``adata``.
    """
    counts = require_counts(adata, layer=counts_layer)
    view = ad.AnnData(X=counts, var=pd.DataFrame(index=adata.var_names))
    view.uns["cellsmith"] = adata.uns.get("cellsmith", {})
    aligned = genespace.align(view, missing="error", min_overlap=1.0).X
    dense = aligned.toarray() if sp.issparse(aligned) else np.asarray(aligned)
    return dense.astype(np.float32, copy=False)


def encode_cells(counts: np.ndarray, codes: dict[str, np.ndarray]) -> EncodedData:
    """Dense tensors of aligned counts: the encoder input is :func:`normalize.log1p_normalize`."""
    x = torch.from_numpy(counts)
    return EncodedData(x=x, x_log=normalize.log1p_normalize(x), library=x.sum(1), codes=codes)
