"""The user-facing HP-VADE deconvolver: train on a labelled reference, predict bulk proportions.

A saved model directory holds ``weights.pt`` (module state), ``config.yaml``,
``genespace.json``, ``cell_types.json``, ``signature.csv`` (mean CPM per type of the training
cells: the initial S and the NNLS baseline's signature), ``training.json`` (first-batch
diagnostics, validation metrics), ``history.csv`` (per-epoch losses) and ``report.html``
(training curves and diagnostics).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, TensorDataset

from cellsmith._logging import logger, seed_everything
from cellsmith.data import GeneSpace, normalize, require_counts, require_linear
from cellsmith.data.audit import describe_source
from cellsmith.data.pseudobulk import (
    cell_type_labels,
    check_type_sizes,
    pseudobulk,
    stratified_split,
)
from cellsmith.deconvolution.config import DeconvolutionConfig
from cellsmith.deconvolution.module import HPVADE, LossWeights
from cellsmith.deconvolution.nnls import nnls_proportions
from cellsmith.deconvolution.plan import HPVADEPlan
from cellsmith.deconvolution.reference import consistent_marker_scores, mean_cpm_by_type, select_genes
from cellsmith.errors import GeneSpaceError, InputError
from cellsmith.report import Report, atomic_output_dir

#: Keys written into a predicted AnnData.
OBSM_HPVADE, OBSM_NNLS = "proportions_hpvade", "proportions_nnls"
OBS_FIT_HPVADE, OBS_FIT_NNLS = "fit_r2_log_hpvade", "fit_r2_log_nnls"


@dataclass
class Prediction:
    """Proportions of HP-VADE and of the NNLS baseline, and how well each explains the bulk.

    Attributes
    ----------
    proportions, nnls
        Samples x cell types, rows sum to 1.
    fit
        Per sample: ``r2_log_hpvade`` / ``r2_log_nnls``, the R^2 over genes of
        ``log1p(S p / 100)`` against ``log1p(bulk_cpm / 100)`` (low values: the bulk holds
        something the reference lacks), and ``nnls_total``, the sum of the raw NNLS coefficients.
    """

    proportions: pd.DataFrame
    nnls: pd.DataFrame
    fit: pd.DataFrame


def r2_log(bulk_cpm: np.ndarray, reconstructed_cpm: np.ndarray) -> np.ndarray:
    """Per-row R^2 of the reconstruction in log1p(CPM/100) space."""
    y = normalize.bulk_to_network(np.asarray(bulk_cpm, dtype=np.float64))
    y_hat = normalize.bulk_to_network(np.asarray(reconstructed_cpm, dtype=np.float64))
    residual = ((y - y_hat) ** 2).sum(axis=1)
    total = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return 1.0 - np.divide(residual, total, out=np.full_like(residual, np.nan), where=total > 0)


class Deconvolver:
    """HP-VADE with its gene space, cell types and NNLS baseline.

    Build one with :meth:`train` or :meth:`load`; then :meth:`predict`, :meth:`evaluate` and
    :meth:`save`.
    """

    def __init__(
        self,
        module: HPVADE,
        config: DeconvolutionConfig,
        genespace: GeneSpace,
        cell_types: Sequence[str],
        reference_signature: np.ndarray,
        training: dict | None = None,
        history: pd.DataFrame | None = None,
    ):
        self.module = module.eval()
        self.config = config
        self.genespace = genespace
        self.cell_types = list(cell_types)
        self.reference_signature = reference_signature
        self.training = training or {}
        self.history = history if history is not None else pd.DataFrame()

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        reference: ad.AnnData,
        *,
        cell_type_key: str,
        counts_layer: str | None = None,
        genes: Sequence[str] | None = None,
        config: DeconvolutionConfig | None = None,
        progress_bar: bool = True,
    ) -> Deconvolver:
        """Train HP-VADE on pseudo-bulks of ``reference``.

        Parameters
        ----------
        reference
            Cells x genes, raw counts in X (or ``counts_layer``), labels in ``cell_type_key``.
        genes
            Restrict training to these genes (e.g. those a bulk data set has: ``--genes-from``).
        config
            Options (default :class:`DeconvolutionConfig`); ``config.seed`` seeds everything.
        progress_bar
            Show Lightning's progress bar.

        Raises
        ------
        InputError, ScaleError, GeneSpaceError
            Unknown key, a type with fewer than 2 cells, no raw counts, too few genes.
        """
        config = config or DeconvolutionConfig()
        what = describe_source(reference)
        labels = cell_type_labels(reference, cell_type_key, what=what)
        counts = sp.csr_matrix(require_counts(reference, layer=counts_layer))
        cell_types = check_type_sizes(labels, what=what)
        gene_names = np.asarray(reference.var_names, dtype=str)
        if genes is not None:
            keep = np.flatnonzero(np.isin(gene_names, np.asarray(list(genes), dtype=str)))
            logger.info("restricted to the %d of %d reference genes the bulk has", keep.size, gene_names.size)
            counts, gene_names = counts[:, keep], gene_names[keep]
        seed_everything(config.seed)
        train_cells, val_cells = stratified_split(labels, config.val_fraction, seed=config.seed)

        scores = consistent_marker_scores(
            counts[train_cells],
            labels[train_cells],
            cell_types,
            min_mean_cpm=config.min_mean_cpm if config.n_marker_genes is not None else 0.0,
            min_cell_fraction=config.min_cell_fraction if config.n_marker_genes is not None else 0.0,
            seed=config.seed,
        )
        chosen = select_genes(
            gene_names, scores, n_per_type=config.n_marker_genes, exclude_patterns=config.exclude_gene_patterns
        )
        counts = counts[:, chosen]
        genespace = GeneSpace(gene_names[chosen])
        signature = mean_cpm_by_type(counts[train_cells], labels[train_cells], cell_types)
        logger.info(
            "signature S initialised from the mean CPM of %d training cells per type (%s) over "
            "%d genes",
            train_cells.size,
            ", ".join(f"{t}: {int(np.sum(labels[train_cells] == t))}" for t in cell_types),
            len(genespace),
        )
        totals = np.asarray(counts[train_cells].sum(axis=1)).ravel()
        per_cell = np.array([totals[labels[train_cells] == t].mean() for t in cell_types])
        content = per_cell / per_cell.mean()
        logger.info(
            "mRNA content per cell (mean counts over the model's genes, relative): %s",
            ", ".join(f"{t} {c:.3f}" for t, c in zip(cell_types, content)),
        )
        module = build_module(config, signature, content)
        model = cls(module, config, genespace, cell_types, signature)
        model._fit(counts, labels, train_cells, val_cells, progress_bar=progress_bar)
        return model

    def _pseudobulk_tensors(self, counts, labels, cells, n_samples: int, seed: int):
        obs = pd.DataFrame({"cell_type": labels}, index=[f"cell{i}" for i in range(labels.size)])
        reference = ad.AnnData(X=counts, obs=obs)
        bulk = pseudobulk(
            reference,
            n_samples,
            cells=cells,
            cell_types=self.cell_types,
            cells_per_sample=self.config.cells_per_sample,
            alpha=self.config.alpha,
            sparse_fraction=self.config.sparse_fraction,
            seed=seed,
        )
        return torch.from_numpy(bulk.X), torch.as_tensor(bulk.obsm["proportions"].to_numpy(), dtype=torch.float32)

    def _cell_tensors(self, counts, labels, cells):
        log_cells = normalize.log1p_normalize(counts[cells]).toarray().astype(np.float32)
        codes = np.array(pd.Categorical(labels[cells], categories=self.cell_types).codes, dtype=np.int64)
        return torch.from_numpy(log_cells), torch.from_numpy(codes)

    def _fit(self, counts, labels, train_cells, val_cells, *, progress_bar: bool) -> None:
        from cellsmith.nn import load_best_weights, make_trainer, torch_threads

        config = self.config
        train_bulk = self._pseudobulk_tensors(counts, labels, train_cells, config.n_train_samples, config.seed)
        val_bulk = self._pseudobulk_tensors(counts, labels, val_cells, config.n_val_samples, config.seed + 1)
        plan = HPVADEPlan(
            self.module,
            self._cell_tensors(counts, labels, train_cells),
            self._cell_tensors(counts, labels, val_cells),
            weights=LossWeights(
                vae_kl=config.lambda_kl,
                proto=config.lambda_proto,
                bulk_recon=config.lambda_bulk_recon,
                bulk_prop=config.lambda_bulk,
                prop_kl=config.prop_kl_weight,
            ),
            gene_noise_sd=config.gene_noise_sd,
            cell_batch_size=config.cell_batch_size,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            lr_patience=config.lr_patience,
        )
        generator = torch.Generator().manual_seed(config.seed)
        train_loader = DataLoader(
            TensorDataset(*train_bulk), batch_size=config.batch_size, shuffle=True, generator=generator
        )
        val_loader = DataLoader(TensorDataset(*val_bulk), batch_size=config.batch_size)
        work = Path(tempfile.mkdtemp(prefix="cellsmith_deconvolve_"))
        try:
            trainer = make_trainer(
                work, max_epochs=config.max_epochs, patience=config.patience, progress_bar=progress_bar
            )
            plan.train()  # the module is kept in eval mode outside training
            with torch_threads(config.torch_threads):
                trainer.fit(plan, train_loader, val_loader)
            load_best_weights(trainer, plan)
            self.history = _epoch_history(work / "logs" / "metrics.csv")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.module.eval()
        val_pred = self._predict_cpm(val_bulk[0].numpy())
        truth = pd.DataFrame(val_bulk[1].numpy(), columns=self.cell_types)
        self.training = {
            "diagnostics": plan.diagnostics,
            "epochs_trained": int(trainer.current_epoch),
            "best_val_loss": float(trainer.checkpoint_callback.best_model_score or np.nan),
            "validation": _validation_summary(val_pred, truth),
        }

    # ------------------------------------------------------------------ inference
    def _predict_cpm(self, bulk_cpm: np.ndarray, index: Sequence[str] | None = None) -> Prediction:
        with torch.no_grad():
            props_tensor = self.module.proportions(torch.as_tensor(bulk_cpm, dtype=torch.float32))
            reconstructed = self.module.reconstruct_bulk(props_tensor).numpy().astype(np.float64)
        props = props_tensor.numpy()
        nnls, coefficients = nnls_proportions(bulk_cpm, self.reference_signature)
        index = pd.Index(index if index is not None else [str(i) for i in range(len(bulk_cpm))], dtype=str)
        fit = pd.DataFrame(
            {
                "r2_log_hpvade": r2_log(bulk_cpm, reconstructed),
                "r2_log_nnls": r2_log(bulk_cpm, coefficients @ self.reference_signature.T),
                "nnls_total": coefficients.sum(axis=1),
            },
            index=index,
        )
        return Prediction(
            proportions=pd.DataFrame(props.astype(np.float64), index=index, columns=self.cell_types),
            nnls=pd.DataFrame(nnls, index=index, columns=self.cell_types),
            fit=fit,
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
        values, scale = require_linear(bulk, layer=layer)
        linear = ad.AnnData(X=values, obs=pd.DataFrame(index=bulk.obs_names), var=pd.DataFrame(index=bulk.var_names))
        linear.uns["cellsmith"] = dict(bulk.uns.get("cellsmith", {}))
        try:
            aligned = self.genespace.align(linear, min_overlap=self.config.min_gene_overlap)
        except GeneSpaceError as err:
            raise GeneSpaceError(
                f"{describe_source(bulk)}: {err} To use this bulk, retrain restricted to its genes: "
                "cellsmith deconvolve train ... --genes-from BULK."
            ) from None
        x = aligned.X.toarray() if hasattr(aligned.X, "toarray") else np.asarray(aligned.X)
        empty = np.flatnonzero(x.sum(axis=1) <= 0)
        if empty.size:
            raise InputError(
                f"{describe_source(bulk)}: samples {list(bulk.obs_names[empty][:5])} have no "
                "expression in the model's genes; check the gene names and the sample orientation."
            )
        logger.info("bulk %s: %s scale, %d samples", describe_source(bulk), scale, bulk.n_obs)
        return normalize.cpm(x.astype(np.float64))

    def predict(self, bulk: ad.AnnData, *, layer: str | None = None) -> Prediction:
        """Cell-type proportions of each bulk sample by HP-VADE and by NNLS.

        Parameters
        ----------
        bulk
            Samples x genes of raw counts or CPM/TPM (log input is refused).
        layer
            Use this layer instead of X.

        Returns
        -------
        Prediction
            Also written to ``bulk``: ``obsm["proportions_hpvade"]``, ``obsm["proportions_nnls"]``
            (DataFrames, one column per cell type), ``obs["fit_r2_log_hpvade"]`` and
            ``obs["fit_r2_log_nnls"]``.
        """
        prediction = self._predict_cpm(self.bulk_cpm(bulk, layer=layer), index=bulk.obs_names)
        bulk.obsm[OBSM_HPVADE] = prediction.proportions
        bulk.obsm[OBSM_NNLS] = prediction.nnls
        bulk.obs[OBS_FIT_HPVADE] = prediction.fit["r2_log_hpvade"].to_numpy()
        bulk.obs[OBS_FIT_NNLS] = prediction.fit["r2_log_nnls"].to_numpy()
        return prediction

    def evaluate(self, bulk: ad.AnnData, truth: pd.DataFrame, *, mapping=None, layer: str | None = None):
        """Predict ``bulk`` and compare HP-VADE and NNLS with ``truth`` (see
        :func:`cellsmith.deconvolution.evaluate.compare`)."""
        from cellsmith.deconvolution.evaluate import compare

        prediction = self.predict(bulk, layer=layer)
        return compare({"HP-VADE": prediction.proportions, "NNLS": prediction.nnls}, truth, mapping=mapping)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the model directory (replaced only once complete)."""
        with atomic_output_dir(path) as tmp:
            torch.save(self.module.state_dict(), tmp / "weights.pt")
            self.config.to_yaml(tmp / "config.yaml")
            self.genespace.write(tmp / "genespace.json")
            (tmp / "cell_types.json").write_text(json.dumps(self.cell_types))
            pd.DataFrame(self.reference_signature, index=list(self.genespace), columns=self.cell_types).to_csv(
                tmp / "signature.csv"
            )
            (tmp / "training.json").write_text(json.dumps(self.training, indent=2))
            self.history.to_csv(tmp / "history.csv", index=False)
            self.training_report().write(tmp / "report.html")
        return Path(path)

    def training_report(self) -> Report:
        """Training curves, validation metrics and first-batch diagnostics as an HTML page."""
        from cellsmith.deconvolution.evaluate import training_report

        report = Report("HP-VADE training")
        report.text(f"{len(self.genespace):,} genes; cell types: {', '.join(self.cell_types)}.")
        training_report(report, self.training, self.history)
        return report

    @classmethod
    def load(cls, path: str | Path) -> Deconvolver:
        """Load a directory written by :meth:`save` (in any process)."""
        path = Path(path)
        needed = ["weights.pt", "config.yaml", "genespace.json", "cell_types.json", "signature.csv"]
        absent = [name for name in needed if not (path / name).is_file()]
        if absent:
            raise InputError(
                f"{path} is not a deconvolution model directory (missing {', '.join(absent)}); pass "
                "the --out folder of `cellsmith deconvolve train`."
            )
        config = DeconvolutionConfig.from_yaml(path / "config.yaml")
        genespace = GeneSpace.read(path / "genespace.json")
        cell_types = json.loads((path / "cell_types.json").read_text())
        signature = pd.read_csv(path / "signature.csv", index_col=0)
        if list(signature.index.astype(str)) != list(genespace) or list(signature.columns) != cell_types:
            raise InputError(f"{path}/signature.csv does not match genespace.json / cell_types.json.")
        module = build_module(config, signature.to_numpy(), np.ones(len(cell_types)))
        module.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
        training = json.loads((path / "training.json").read_text()) if (path / "training.json").is_file() else {}
        history = pd.read_csv(path / "history.csv") if (path / "history.csv").is_file() else None
        return cls(module, config, genespace, cell_types, signature.to_numpy(), training, history)


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


def _epoch_history(metrics_csv: Path) -> pd.DataFrame:
    """One row per epoch from Lightning's CSV log (train and val rows merged)."""
    if not metrics_csv.is_file():
        return pd.DataFrame()
    log = pd.read_csv(metrics_csv)
    return log.drop(columns=[c for c in ("step",) if c in log]).groupby("epoch").mean().reset_index()


def _validation_summary(prediction: Prediction, truth: pd.DataFrame) -> dict:
    from cellsmith.deconvolution.evaluate import compare

    result = compare(
        {"HP-VADE": prediction.proportions.reset_index(drop=True), "NNLS": prediction.nnls.reset_index(drop=True)},
        truth,
    )
    return result.pooled.to_dict(orient="index")
