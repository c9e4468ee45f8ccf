"""The user-facing HP-VADE deconvolver: train on a labelled reference, predict bulk proportions.

``Deconvolver(config).train(reference, cell_type_key=...)`` returns the trained model; its
folder (:meth:`~cellsmith.nn.base.CellsmithModel.save`) is the shared model directory
(``config.yaml``, ``genespace.json``, ``weights.safetensors``, ``cellsmith_model.json``) with
``setup.json`` (label key, counts layer, cell types, mRNA content per type) and the extras
``signature.csv`` (mean CPM per type of the training cells: the initial S and the NNLS
baseline's signature), ``training.json`` (first-batch diagnostics, validation metrics),
``history.csv`` (per-epoch losses) and ``report.html`` (training curves and diagnostics).
Folders of cellsmith 0.1 (``weights.pt``, ``cell_types.json``) still load.
"""

from __future__ import annotations

import functools
import json
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, TensorDataset

from cellsmith._logging import logger, seed_everything
from cellsmith.data import GeneSpace, normalize
from cellsmith.data.audit import describe_source
from cellsmith.data.io import require_unique_genes
from cellsmith.data.pseudobulk import as_count_rows, cell_type_labels, check_type_sizes, cpm_in_place, mix_counts
from cellsmith.data.rows import CountRows, count_rows
from cellsmith.data.splits import split_indices
from cellsmith.deconvolution.adapt import adapt as adapt_platform
from cellsmith.deconvolution.bulk_input import require_expressed_samples, require_linear_bulk
from cellsmith.deconvolution.config import DeconvolutionConfig
from cellsmith.deconvolution.content import (
    REFERENCE,
    BulkContent,
    bulk_content,
    reweight,
    unknown_cells,
    unknown_mrna_for,
)
from cellsmith.deconvolution.module import HPVADE
from cellsmith.deconvolution.nnls import nnls_proportions
from cellsmith.deconvolution.plan import HPVADEPlan
from cellsmith.deconvolution.reference import (
    GroupMeans,
    consistent_marker_scores,
    genes_to_train_on,
    group_means_by_part,
    marker_scores,
    pooled_means,
    select_genes,
    top_genes,
    type_codes,
)
from cellsmith.deconvolution.unknown import (
    ANCHOR_SE,
    MIN_ANCHORS,
    SET_FLOOR,
    UNKNOWN,
    UNKNOWN_FLAG,
    Anchors,
    anchor_noise,
    choose_anchors,
    known_log_share,
    read_fractions,
    set_floor,
    unknown_fraction,
    with_unknown,
)
from cellsmith.errors import (
    CellsmithDeprecationWarning,
    ConfigError,
    GeneSpaceError,
    ModelDirectoryError,
)
from cellsmith.nn import torch_threads
from cellsmith.nn.base import CellsmithModel, deprecated
from cellsmith.nn.saving import ModelFiles, load_legacy_state
from cellsmith.report import Report

#: Keys written into a predicted AnnData.
OBSM_HPVADE, OBSM_NNLS = "proportions_hpvade", "proportions_nnls"
OBS_FIT_HPVADE, OBS_FIT_NNLS = "fit_r2_log_hpvade", "fit_r2_log_nnls"
#: Extra files of a model folder.
SIGNATURE, TRAINING, REPORT, ANCHORS = "signature.csv", "training.json", "report.html", "anchors.csv"
#: Files of a cellsmith 0.1 model folder (no manifest).
LEGACY_FILES = ("weights.pt", "config.yaml", "genespace.json", "cell_types.json", SIGNATURE)
#: Bulk samples per batch at prediction (rows are independent; this bounds device memory).
PREDICT_BATCH = 2048


@dataclass
class Prediction:
    """Proportions of HP-VADE and of the NNLS baseline, and how well each explains the bulk.

    Attributes
    ----------
    proportions, nnls
        Samples x cell types, rows sum to 1 over the reference's types.
    fit
        Per sample: ``r2_log_hpvade`` / ``r2_log_nnls``, the R^2 over genes of
        ``log1p(S p / 100)`` against ``log1p(bulk_cpm / 100)`` (after platform adaptation when
        it ran; low values: the bulk holds something the reference lacks), ``nnls_total``, the
        sum of the raw NNLS coefficients, and, when the model can estimate it,
        ``unknown_hpvade`` (a share of cells when the fractions are weighted by mRNA per cell) /
        ``unknown_nnls`` (a share of reads), ``unknown_flag`` (unknown above
        :data:`~cellsmith.deconvolution.unknown.UNKNOWN_FLAG`) and ``unknown_anchor_se``, how far
        (natural log) the anchors' own platform factors may move the unknown's level
        (:func:`~cellsmith.deconvolution.unknown.anchor_noise`), and ``unknown_set_floor``, how far
        (natural log, one value for the set) the set's ``log(1 - unknown)`` was lowered because
        some samples came out below 0 (:func:`~cellsmith.deconvolution.unknown.set_floor`).
    platform
        Gene-wise natural-log platform factors (bulk over reference) when adaptation ran.
    range_exponent
        The power adaptation raised the bulk CPM to, restoring its dynamic range against the
        reference (:func:`cellsmith.deconvolution.adapt.range_exponent`); None without adaptation.
    mrna_content
        When HP-VADE's cell fractions were re-weighted to the bulk's mRNA per cell
        (:mod:`cellsmith.deconvolution.content`): per type, ``reference`` (counts per cell in the
        reference) and ``bulk`` (mRNA per cell), each relative to its types' mean; row
        ``unknown``: the unknown cells' mRNA per cell, when set.
    """

    proportions: pd.DataFrame
    nnls: pd.DataFrame
    fit: pd.DataFrame
    platform: pd.Series | None = None
    mrna_content: pd.DataFrame | None = None
    range_exponent: float | None = None

    def with_unknown(self, method: str = "hpvade") -> pd.DataFrame:
        """Proportions of ``method`` (``hpvade`` or ``nnls``) over the cell types and ``unknown``
        (rows sum to 1; ``unknown`` is NaN when the model has no estimate)."""
        frame = self.proportions if method == "hpvade" else self.nnls
        column = f"{UNKNOWN}_{method}"
        return with_unknown(frame, self.fit[column].to_numpy() if column in self.fit else None)


def r2_log(bulk_cpm: np.ndarray, reconstructed_cpm: np.ndarray) -> np.ndarray:
    """Per-row R^2 of the reconstruction in log1p(CPM/100) space."""
    y = normalize.bulk_to_network(np.asarray(bulk_cpm, dtype=np.float64))
    y_hat = normalize.bulk_to_network(np.asarray(reconstructed_cpm, dtype=np.float64))
    residual = ((y - y_hat) ** 2).sum(axis=1)
    total = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return 1.0 - np.divide(residual, total, out=np.full_like(residual, np.nan), where=total > 0)


class _TrainEntry:
    """``model.train(...)`` trains the model; ``Deconvolver.train(reference, ..., config=cfg)``,
    the classmethod of cellsmith 0.1, still works for one release: it builds
    ``Deconvolver(cfg)``, warns with a :class:`~cellsmith.errors.CellsmithDeprecationWarning`
    and trains it."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        functools.update_wrapper(self, function)

    def __get__(self, instance: Any, owner: type) -> Callable[..., Any]:
        if instance is not None:
            return types.MethodType(self.function, instance)

        @deprecated(
            f"{owner.__name__}.train(reference, ..., config=cfg) is deprecated; write "
            f"{owner.__name__}(cfg).train(reference, ...) (progress_bar is now a config option)."
        )
        @functools.wraps(self.function)
        def build_and_train(
            reference: ad.AnnData,
            *args: Any,
            config: DeconvolutionConfig | None = None,
            progress_bar: bool | None = None,
            **kwargs: Any,
        ) -> Deconvolver:
            config = config if config is not None else owner.config_class()
            if progress_bar is not None:
                config = config.model_copy(update={"progress_bar": progress_bar})
            return owner(config).train(reference, *args, **kwargs)

        return build_and_train


class Deconvolver(CellsmithModel):
    """HP-VADE with its gene space, cell types and NNLS baseline.

    ``Deconvolver(config).train(reference, cell_type_key=...)`` or :meth:`load`; then
    :meth:`predict`, :meth:`evaluate` and :meth:`save`.

    Parameters
    ----------
    config
        Options (default :class:`DeconvolutionConfig`); ``config.seed`` seeds everything.
    """

    workflow = "deconvolution"
    config_class = DeconvolutionConfig
    command = "cellsmith deconvolve train"

    config: DeconvolutionConfig
    module: HPVADE | None

    def __init__(self, config: DeconvolutionConfig | None = None):
        super().__init__(config)
        self.cell_types: list[str] = []
        #: (genes, types) mean CPM of the training cells: NNLS's signature and the initial S.
        self.reference_signature: np.ndarray | None = None
        #: Label key, counts layer, cell types and mRNA content per type (``setup.json``).
        self.setup: dict[str, Any] = {}
        #: First-batch diagnostics, epochs and validation metrics (``training.json``).
        self.training: dict[str, Any] = {}
        #: Genes even across types and the marker share per type, for the unknown fraction
        #: (``anchors.csv``; None for models without it).
        self.anchors: Anchors | None = None

    # ------------------------------------------------------------------ training
    @_TrainEntry
    def train(
        self,
        reference: ad.AnnData,
        *,
        cell_type_key: str,
        counts_layer: str | None = None,
        genes: Sequence[str] | None = None,
    ) -> Deconvolver:
        """Train HP-VADE on pseudo-bulks of ``reference``; returns ``self``.

        Parameters
        ----------
        reference
            Cells x genes, raw counts in X (or ``counts_layer``), labels in ``cell_type_key``;
            in memory or opened backed (:func:`cellsmith.data.rows.read_backed`), when it is
            read by blocks of cells (the same model for the same seed). The counts are never
            densified whole: statistics and pseudo-bulks are summed block by block, and the
            VAE branch keeps at most ``vae_cells_per_type`` cells per type, sparse.
        genes
            Restrict training to these genes (e.g. those a bulk data set has: ``--genes-from``).

        Raises
        ------
        InputError, ScaleError, GeneSpaceError
            Unknown key, a type with fewer than 2 cells, no raw counts, too few genes.
        """
        config = self.config
        what = describe_source(reference)
        require_unique_genes(reference.var_names, what)
        labels = cell_type_labels(reference, cell_type_key, what=what)
        counts = count_rows(reference, layer=counts_layer)
        cell_types = check_type_sizes(labels, what=what)
        gene_names = np.asarray(reference.var_names, dtype=str)
        if genes is not None:
            keep = genes_to_train_on(gene_names, genes, what)
            logger.info("restricted to the %d of %d reference genes the bulk has", keep.size, gene_names.size)
            counts, gene_names = _take_columns(counts, keep), gene_names[keep]
        seed_everything(config.seed)
        # Every type with >= 2 cells has cells on both sides (check_type_sizes refused fewer).
        parts = split_indices(labels.size, {"validation": config.val_fraction}, seed=config.seed, groups=labels)
        train_cells, val_cells = parts["train"], parts["validation"]

        chosen = self._marker_genes(counts, labels, train_cells, cell_types, gene_names)
        universe, held_out = group_means_by_part(counts, labels, cell_types, [train_cells, val_cells])
        counts = _take_columns(counts, chosen)
        self.genespace = GeneSpace(gene_names[chosen])
        self.cell_types = cell_types
        (means,) = group_means_by_part(counts, labels, cell_types, [train_cells])
        self.anchors = self._anchors(pooled_means([universe, held_out]), universe, means, gene_names)
        self.reference_signature = means.cpm
        logger.info(
            "signature S initialised from the mean CPM of %d training cells per type (%s) over "
            "%d genes", train_cells.size,
            ", ".join(f"{t}: {int(n)}" for t, n in zip(cell_types, means.sizes, strict=True)), len(self.genespace),
        )
        # In the counts' precision (float32 for most h5ad files), as the whole-matrix means were.
        dtype = counts.matrix.dtype
        per_cell = means.totals.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64)
        content = per_cell / per_cell.mean()
        logger.info(
            "mRNA content per cell (mean counts over the model's genes, relative): %s",
            ", ".join(f"{t} {c:.3f}" for t, c in zip(cell_types, content, strict=True)),
        )
        self.setup = {
            "cell_type_key": cell_type_key,
            "counts_layer": counts_layer,
            "cell_types": cell_types,
            "mrna_content": [float(c) for c in content],
            # Over every training gene: what a type's cells weigh in a pseudo-bulk (content.py).
            "counts_per_cell": [float(c) for c in universe.totals],
        }
        self.module = build_module(config, self.reference_signature, content)
        self._fit(counts, labels, train_cells, val_cells)
        return self

    def _anchors(
        self, every_cell: GroupMeans, universe: GroupMeans, model_genes: GroupMeans, gene_names: np.ndarray
    ) -> Anchors | None:
        """Genes even across types, for the unknown fraction (None when too few qualify).

        The anchors are chosen on ``every_cell`` (training and validation cells), away from the
        genes the marker rule picks there: a property of the reference, not of the seed. Chosen
        away from the model's own markers, which move with the seed's split and halves, they
        moved too, and the unknown with them (on GSE127813, 15 of the 51 anchors of 3 seeds were
        shared; BENCHMARKS.md). Their CPM is the training cells', as the markers' signature is.
        """
        config, markers = self.config, None
        if config.n_marker_genes is not None:  # else every gene is a model gene
            scores = marker_scores(
                every_cell.cpm, every_cell.detection, min_mean_cpm=config.min_mean_cpm,
                min_cell_fraction=config.min_cell_fraction,
            )
            markers = np.zeros(gene_names.size, dtype=bool)
            markers[top_genes(
                gene_names, scores, n_per_type=config.n_marker_genes, exclude_patterns=config.exclude_gene_patterns
            )] = True
        picked = choose_anchors(
            every_cell.cpm, every_cell.detection, gene_names, exclude=markers,
            exclude_patterns=config.exclude_gene_patterns,
        )
        if picked.size < MIN_ANCHORS:
            logger.warning("only %d anchor genes: no unknown fraction will be estimated", picked.size)
            return None
        logger.info("%d anchor genes (even across types) for the unknown fraction", picked.size)
        return Anchors(list(gene_names[picked]), universe.cpm[picked], model_genes.totals / universe.totals)

    def _marker_genes(
        self, counts: CountRows, labels: np.ndarray, train_cells: np.ndarray, cell_types: list[str],
        gene_names: np.ndarray,
    ) -> np.ndarray:
        """Indices of the model's genes, chosen on the training cells only."""
        config = self.config
        markers = config.n_marker_genes is not None
        scores = consistent_marker_scores(
            counts,
            labels,
            cell_types,
            min_mean_cpm=config.min_mean_cpm if markers else 0.0,
            min_cell_fraction=config.min_cell_fraction if markers else 0.0,
            seed=config.seed,
            cells=train_cells,
        )
        return select_genes(
            gene_names, scores, n_per_type=config.n_marker_genes, exclude_patterns=config.exclude_gene_patterns
        )

    def _pseudobulk_tensors(self, counts, labels, cells, n_samples: int, seed: int):
        """(CPM, true proportions) tensors of ``n_samples`` pseudo-bulks of the rows ``cells``."""
        mixed = mix_counts(
            as_count_rows(counts),
            labels,
            n_samples,
            cells=cells,
            cell_types=self.cell_types,
            cells_per_sample=self.config.cells_per_sample,
            alpha=self.config.alpha,
            sparse_fraction=self.config.sparse_fraction,
            seed=seed,
        )
        return torch.from_numpy(cpm_in_place(mixed.counts)), torch.as_tensor(mixed.proportions, dtype=torch.float32)

    def _vae_cells(
        self, counts: CountRows, labels: np.ndarray, cells: np.ndarray
    ) -> tuple[sp.csr_matrix, torch.Tensor]:
        """log1p(CP10k) of the VAE branch's cells (CSR; the plan densifies a batch at a time) and
        their type codes: ``cells``, at most ``vae_cells_per_type`` per type (seeded draw)."""
        cells = cap_per_type(cells, labels[cells], self.config.vae_cells_per_type, seed=self.config.seed)
        log_cells = normalize.log1p_normalize(counts.take(cells))
        return sp.csr_matrix(log_cells, dtype=np.float32), torch.from_numpy(type_codes(labels[cells], self.cell_types))

    def _fit(self, counts, labels, train_cells, val_cells) -> None:
        config = self.config
        train_bulk = self._pseudobulk_tensors(counts, labels, train_cells, config.n_train_samples, config.seed)
        val_bulk = self._pseudobulk_tensors(counts, labels, val_cells, config.n_val_samples, config.seed + 1)
        plan = HPVADEPlan(
            self.module,
            config,
            self._vae_cells(counts, labels, train_cells),
            self._vae_cells(counts, labels, val_cells),
        )
        generator = torch.Generator().manual_seed(config.seed)
        train_loader = DataLoader(
            TensorDataset(*train_bulk), batch_size=config.batch_size, shuffle=True, generator=generator
        )
        val_loader = DataLoader(TensorDataset(*val_bulk), batch_size=config.batch_size)
        trainer = self.fit_plan(plan, train_loader, val_loader)
        val_pred = self._predict_cpm(val_bulk[0].numpy())
        truth = pd.DataFrame(val_bulk[1].numpy(), columns=self.cell_types)
        best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
        self.training = {
            "diagnostics": plan.diagnostics,
            "epochs_trained": int(trainer.current_epoch),
            "best_val_loss": float(best) if best is not None else float("nan"),
            "validation": _validation_summary(val_pred, truth),
        }

    # ------------------------------------------------------------------ inference
    def _network(self, bulk_cpm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """HP-VADE proportions and reconstructed CPM, in batches on :attr:`device`."""
        device = self.device
        module = self.module.to(device)
        proportions, reconstructed = [], []
        with torch.no_grad(), torch_threads(self.config.num_threads):
            # max(.., 1): zero samples still give one (empty) batch of the right width.
            for start in range(0, max(len(bulk_cpm), 1), PREDICT_BATCH):
                batch = torch.as_tensor(bulk_cpm[start : start + PREDICT_BATCH], dtype=torch.float32).to(device)
                p = module.proportions(batch)
                proportions.append(p.cpu().numpy())
                reconstructed.append(module.reconstruct_bulk(p).cpu().numpy())
        return np.concatenate(proportions), np.concatenate(reconstructed).astype(np.float64)

    def network_fit(self, bulk_cpm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's proportions and reconstructed CPM for ``bulk_cpm`` (CPM over the model's
        genes), without adaptation: the ``fit`` argument of :func:`adapt` (reference-weighted
        fractions, float64)."""
        props, reconstructed = self._network(bulk_cpm)
        return props.astype(np.float64), reconstructed

    def _predict_cpm(
        self,
        bulk_cpm: np.ndarray,
        index: Sequence[str] | None = None,
        *,
        adapt: bool = False,
        bulk_linear: tuple[np.ndarray, np.ndarray] | None = None,
        content: BulkContent | None = None,
    ) -> Prediction:
        """Both methods on ``bulk_cpm``; ``adapt``: HP-VADE with platform adaptation;
        ``bulk_linear``: the bulk's linear values on the model's genes and on the anchors, for
        the unknown fraction; ``content``: the bulk's mRNA per cell, to re-weight HP-VADE's cell
        fractions and unknown share to (None: the reference's counts per cell)."""
        platform, exponent = None, None
        if adapt:
            adapted = adapt_platform(bulk_cpm, self.network_fit)
            props, reconstructed, fitted = adapted.proportions, adapted.reconstructed, adapted.corrected
            platform = pd.Series(adapted.log_factors, index=list(self.genespace), name="log_factor")
            exponent = adapted.exponent
            logger.info("platform adaptation: bulk CPM raised to the power %.2f, gene factors SD %.2f",
                        exponent, float(np.std(adapted.log_factors)))
        else:
            (props, reconstructed), fitted = self.network_fit(bulk_cpm), bulk_cpm
        nnls, coefficients = nnls_proportions(bulk_cpm, self.reference_signature)
        index = pd.Index(index if index is not None else [str(i) for i in range(len(bulk_cpm))], dtype=str)
        fit = pd.DataFrame(
            {
                "r2_log_hpvade": r2_log(fitted, reconstructed),
                "r2_log_nnls": r2_log(bulk_cpm, coefficients @ self.reference_signature.T),
                "nnls_total": coefficients.sum(axis=1),
            },
            index=index,
        )
        has_unknown = bulk_linear is not None and self.anchors is not None
        if has_unknown:
            floors = {}
            for method, p in (("hpvade", props), ("nnls", nnls)):
                log_known = self._known_log_share(p, *bulk_linear)
                floors[method] = set_floor(log_known)
                fit[f"{UNKNOWN}_{method}"] = unknown_fraction(log_known, floors[method])
            fit[ANCHOR_SE] = anchor_noise(bulk_linear[1], self._read_fractions(props), self.anchors)
            fit[SET_FLOOR] = floors["hpvade"]
        # After the unknown fraction, which needs the network's own (reference-weighted) fractions.
        mrna_content = None
        if content is not None:
            counts = np.asarray(self.setup["counts_per_cell"], dtype=np.float64)
            props = reweight(props, counts, content.types)
            mrna_content = pd.DataFrame(
                {"reference": counts / counts.mean(), "bulk": content.types / content.types.mean()},
                index=self.cell_types,
            )
            if content.unknown is not None:
                mrna_content.loc[UNKNOWN] = [np.nan, content.unknown / content.types.mean()]
            if has_unknown:  # NNLS's stays a share of reads, like its unweighted fractions
                fit[f"{UNKNOWN}_hpvade"] = unknown_cells(fit[f"{UNKNOWN}_hpvade"].to_numpy(), props, content)
        if has_unknown:
            fit["unknown_flag"] = fit[f"{UNKNOWN}_hpvade"] > UNKNOWN_FLAG
        return Prediction(
            proportions=pd.DataFrame(props, index=index, columns=self.cell_types),
            nnls=pd.DataFrame(nnls, index=index, columns=self.cell_types),
            fit=fit,
            platform=platform,
            mrna_content=mrna_content,
            range_exponent=exponent,
        )

    def bulk_content(
        self, setting: str | Mapping[str, float] | None = None, unknown_mrna: float | None = None
    ) -> BulkContent | None:
        """The bulk's mRNA per cell for ``setting`` and ``unknown_mrna`` (None: the config's
        ``bulk_mrna_content`` / ``unknown_mrna``); None when the fractions keep the reference's
        weights."""
        setting = self.config.bulk_mrna_content if setting is None else setting
        types = bulk_content(self.cell_types, setting)
        if types is None:
            return None
        if "counts_per_cell" not in self.setup:
            logger.warning(
                "this model was trained by an earlier cellsmith and lacks its counts per cell: proportions "
                "are not weighted by mRNA per cell; train it again to weight them"
            )
            return None
        unknown = unknown_mrna_for(setting, self.config.unknown_mrna if unknown_mrna is None else unknown_mrna)
        return BulkContent(types, unknown)

    def _read_fractions(self, proportions: np.ndarray) -> np.ndarray:
        """The network's (reference-weighted) cell fractions -> its types' shares of reads."""
        return read_fractions(proportions, np.asarray(self.setup["mrna_content"], dtype=np.float64))

    def _known_log_share(self, proportions: np.ndarray, markers: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        return known_log_share(
            markers, anchors, self._read_fractions(proportions), self.reference_signature, self.anchors,
            list(self.genespace),
        )

    def bulk_cpm(self, bulk: ad.AnnData, *, layer: str | None = None) -> np.ndarray:
        """Align ``bulk`` to the model's genes and return its CPM over them.

        Raises
        ------
        ScaleError
            Log-scale, scaled, NaN or Inf input (mixtures are linear only in counts/CPM).
        GeneSpaceError
            Fewer than ``min_gene_overlap`` of the model's genes in the bulk.
        """
        return normalize.cpm(self._linear_bulk(bulk, layer=layer)[0])

    def _linear_bulk(self, bulk: ad.AnnData, *, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The bulk's linear values on the model's genes and on the anchors (NaN: absent)."""
        self.require_trained()
        values, scale = require_linear_bulk(bulk, layer=layer)
        linear = ad.AnnData(X=values, obs=pd.DataFrame(index=bulk.obs_names), var=pd.DataFrame(index=bulk.var_names))
        linear.uns["cellsmith"] = dict(bulk.uns.get("cellsmith", {}))
        try:
            aligned = self.genespace.align(linear, min_overlap=self.config.min_gene_overlap)
        except GeneSpaceError as err:
            raise GeneSpaceError(
                f"{describe_source(bulk)}: {err} To use this bulk, retrain restricted to its genes: "
                "cellsmith deconvolve train ... --genes-from BULK, or run `cellsmith deconvolve run`."
            ) from None
        x = _dense(aligned.X).astype(np.float64)
        require_expressed_samples(x, bulk, "the model's genes")
        logger.info("bulk %s: %s scale, %d samples", describe_source(bulk), scale, bulk.n_obs)
        anchors = np.full((bulk.n_obs, 0), np.nan)
        if self.anchors is not None:
            position = pd.Index(bulk.var_names).get_indexer(self.anchors.genes)
            present = position >= 0
            anchors = np.full((bulk.n_obs, len(self.anchors.genes)), np.nan)
            anchors[:, present] = _dense(values[:, position[present]])
        return x, anchors

    def predict(
        self,
        bulk: ad.AnnData,
        *,
        layer: str | None = None,
        adapt: bool = False,
        mrna_content: str | Mapping[str, float] | None = None,
        unknown_mrna: float | None = None,
    ) -> Prediction:
        """Cell-type proportions of each bulk sample by HP-VADE and by NNLS.

        Parameters
        ----------
        bulk
            Samples x genes of raw counts, CPM/TPM or linear microarray intensities (log input is
            refused). With ``adapt``, the samples are one set measured on one platform.
        layer
            Use this layer instead of X.
        adapt
            Estimate gene-wise platform factors from these samples and correct for them
            (:mod:`cellsmith.deconvolution.adapt`); NNLS stays the plain baseline.
        mrna_content
            ``immune``, ``reference`` or a table type -> mRNA per cell, overriding the config's
            ``bulk_mrna_content`` (:mod:`cellsmith.deconvolution.content`). Pseudo-bulks made
            by :func:`cellsmith.data.pseudobulk.pseudobulk` (``uns["pseudobulk"]``) default to
            ``reference``: their cells carry the reference's counts.
        unknown_mrna
            mRNA per cell of the cells the reference lacks, overriding the config's
            ``unknown_mrna`` (e.g. 0.13 for neutrophils in whole blood): with mRNA weights, the
            unknown fraction is a share of cells carrying that much.

        Returns
        -------
        Prediction
            Also written to ``bulk``: ``obsm["proportions_hpvade"]``, ``obsm["proportions_nnls"]``
            (DataFrames, one column per cell type), ``obs["fit_r2_log_hpvade"]`` and
            ``obs["fit_r2_log_nnls"]``. Models trained by this version also give the unknown
            fraction (``fit["unknown_hpvade"]``, :meth:`Prediction.with_unknown`).
        """
        markers, anchors = self._linear_bulk(bulk, layer=layer)
        prediction = self._predict_cpm(
            normalize.cpm(markers), index=bulk.obs_names, adapt=adapt, bulk_linear=(markers, anchors),
            content=self.bulk_content(_content_for(bulk, mrna_content), unknown_mrna),
        )
        bulk.obsm[OBSM_HPVADE] = prediction.proportions
        bulk.obsm[OBSM_NNLS] = prediction.nnls
        bulk.obs[OBS_FIT_HPVADE] = prediction.fit["r2_log_hpvade"].to_numpy()
        bulk.obs[OBS_FIT_NNLS] = prediction.fit["r2_log_nnls"].to_numpy()
        return prediction

    def evaluate(
        self,
        bulk: ad.AnnData,
        truth: pd.DataFrame,
        *,
        mapping=None,
        layer: str | None = None,
        mrna_content: str | Mapping[str, float] | None = None,
    ):
        """Predict ``bulk`` (as :meth:`predict`) and compare HP-VADE and NNLS with ``truth`` (see
        :func:`cellsmith.deconvolution.evaluate.compare`)."""
        from cellsmith.deconvolution.evaluate import compare

        prediction = self.predict(bulk, layer=layer, mrna_content=mrna_content)
        return compare({"HP-VADE": prediction.proportions, "NNLS": prediction.nnls}, truth, mapping=mapping)

    # ------------------------------------------------------------------ persistence
    def setup_dict(self) -> dict[str, Any]:
        return dict(self.setup)

    def extra_files(self) -> dict[str, Callable[[Path], None]]:
        signature = pd.DataFrame(self.reference_signature, index=list(self.genespace), columns=self.cell_types)
        return {
            **super().extra_files(),
            SIGNATURE: signature.to_csv,
            TRAINING: lambda path: path.write_text(json.dumps(self.training, indent=2)),
            REPORT: self.training_report().write,
            **({ANCHORS: self.anchors.to_frame(self.cell_types).to_csv} if self.anchors is not None else {}),
        }

    def training_report(self) -> Report:
        """Training curves, validation metrics and first-batch diagnostics as an HTML page."""
        from cellsmith.deconvolution.evaluate import training_report

        report = Report("HP-VADE training")
        report.text(f"{len(self.genespace):,} genes; cell types: {', '.join(self.cell_types)}.")
        training_report(report, self.training, self.history)
        return report

    def restore(self, files: ModelFiles) -> None:
        """Rebuild HP-VADE from ``setup.json``, ``signature.csv`` and the weights."""
        self.setup = dict(files.setup)
        self.cell_types = [str(t) for t in self.setup["cell_types"]]
        path = files.file(SIGNATURE)
        if path is None:
            raise ModelDirectoryError(f"{files.path} is incomplete: {SIGNATURE} missing; train the model again.")
        signature = pd.read_csv(path, index_col=0)
        if list(signature.index.astype(str)) != list(self.genespace) or list(signature.columns) != self.cell_types:
            raise ModelDirectoryError(
                f"{path} does not match the model's genes and cell types; the folder is damaged, train again."
            )
        self.reference_signature = signature.to_numpy()
        self.module = build_module(self.config, self.reference_signature, np.asarray(self.setup["mrna_content"]))
        self.module.load_state_dict(files.weights)
        training = files.file(TRAINING)
        self.training = json.loads(training.read_text()) if training is not None else {}
        anchors = files.file(ANCHORS)  # absent in folders of earlier versions: no unknown fraction
        self.anchors = Anchors.from_frame(pd.read_csv(anchors, index_col=0)) if anchors is not None else None

    @classmethod
    def read_legacy(cls, path: Path) -> ModelFiles:
        """A deconvolution folder of cellsmith 0.1: ``weights.pt`` (a state dict, read with
        ``weights_only=True``), ``config.yaml``, ``genespace.json``, ``cell_types.json``,
        ``signature.csv``. Save the loaded model to convert the folder."""
        absent = [name for name in LEGACY_FILES if not (path / name).is_file()]
        if absent:
            raise ModelDirectoryError(
                f"{path} has no cellsmith_model.json and is not a deconvolution folder of cellsmith 0.1 "
                f"either (missing {', '.join(absent)}); pass the --out folder of `{cls.command}`."
            )
        warnings.warn(
            f"{path} is a model folder of cellsmith 0.1: it loads for one release; save it again "
            f"({cls.__name__}.load(path).save(new_path)) to write the current format.",
            CellsmithDeprecationWarning,
            stacklevel=2,
        )
        try:
            config = cls.config_class.from_yaml(path / "config.yaml")
        except ConfigError as err:
            raise ModelDirectoryError(f"{path}: {err}") from None
        weights = load_legacy_state(path / "weights.pt")
        if not isinstance(weights, dict) or "mrna_content" not in weights:
            raise ModelDirectoryError(f"{path / 'weights.pt'} is not an HP-VADE state dict; train the model again.")
        cell_types = json.loads((path / "cell_types.json").read_text())
        setup = {
            "cell_type_key": None,
            "counts_layer": None,
            "cell_types": cell_types,
            "mrna_content": [float(c) for c in weights["mrna_content"]],
        }
        return ModelFiles(
            path=path, config=config, setup=setup, weights=weights, genespace=GeneSpace.read(path / "genespace.json")
        )


def _content_for(bulk: ad.AnnData, setting: str | Mapping[str, float] | None) -> str | Mapping[str, float] | None:
    """``setting``, or ``reference`` for a cellsmith pseudo-bulk when none is given."""
    if setting is None and "pseudobulk" in bulk.uns:
        logger.info("bulk is a pseudo-bulk of reference cells (uns['pseudobulk']): types keep the reference's weights")
        return REFERENCE
    return setting


def _dense(x) -> np.ndarray:
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def cap_per_type(cells: np.ndarray, labels: np.ndarray, limit: int, *, seed: int) -> np.ndarray:
    """``cells`` (in their order) with at most ``limit`` of each label, drawn with ``seed``."""
    keep = np.ones(cells.size, dtype=bool)
    rng = np.random.default_rng([seed, limit])
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if members.size > limit:
            keep[members] = False
            keep[rng.choice(members, limit, replace=False)] = True
    return cells[keep]


def _take_columns(counts: CountRows, columns: np.ndarray) -> CountRows:
    """The columns ``columns`` of ``counts``: copied out in memory (a smaller CSR matrix), a
    column selection applied to every block read when backed."""
    selected = columns if counts.columns is None else counts.columns[columns]
    if counts.backed:
        return CountRows(counts.matrix, backed=True, columns=selected)
    return CountRows(counts.matrix[:, selected])


def build_module(config: DeconvolutionConfig, signature: np.ndarray, content: np.ndarray) -> HPVADE:
    """The torch module of ``config`` with initial signature S and mRNA content per type."""
    return HPVADE(
        torch.as_tensor(signature, dtype=torch.float32),
        mrna_content=torch.as_tensor(content) if config.mrna_content_weighting else None,
        n_latent=config.n_latent,
        vae_hidden=config.vae_hidden,
        deconv_hidden=config.deconv_hidden,
        dropout=config.dropout,
    )


def _validation_summary(prediction: Prediction, truth: pd.DataFrame) -> dict:
    from cellsmith.deconvolution.evaluate import compare

    result = compare(
        {"HP-VADE": prediction.proportions.reset_index(drop=True), "NNLS": prediction.nnls.reset_index(drop=True)},
        truth,
    )
    return result.pooled.to_dict(orient="index")
