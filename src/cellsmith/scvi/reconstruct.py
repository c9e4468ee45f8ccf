"""Reconstruction extraction and comparison: real cells next to the model's reconstruction.

The reconstruction of a cell is the decoded mean (in perturbation mode: the prediction from its
matched control cell), made by the model's own predict step. Real counts and reconstructed
means are both put on the log1p(CP10k) scale by the one function
:func:`cellsmith.data.normalize.log1p_normalize`. Genes non-zero in more than 1% of the real
cells are compared in a joint PCA (and its UMAP) of real + reconstructed cells.

The comparison holds real and reconstructed cells dense (for the PCA, UMAP and the written
``reconstructed.h5ad``), so on large data it runs on a seeded subsample of at most
``max_cells`` cells: memory and output size are bounded by ``max_cells``, not by the data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.decomposition import PCA

from cellsmith._logging import logger
from cellsmith.data import normalize
from cellsmith.errors import InputError
from cellsmith.metrics.reconstruction import metrics_by_group
from cellsmith.report import Report, atomic_output_dir
from cellsmith.report.figures import legend_outside
from cellsmith.scvi.data import aligned_rows, check_columns
from cellsmith.scvi.model import ConditionalSCVI

#: A gene is active when non-zero in more than this share of the real cells.
ACTIVE_MIN_FRACTION = 0.01
SOURCE_COLORS = {"real": "#3b6fb6", "reconstructed": "#e0803a"}


@dataclass
class ReconstructionResult:
    """Real and reconstructed cells in one AnnData, and the metrics table.

    ``combined``: 2 x n_cells rows, ``obs["source"]`` real / reconstructed, X log1p(CP10k) of all
    genes, ``layers["counts"]`` real counts / decoded mean counts, ``var["active"]`` and
    ``var["always_zero"]``, ``obsm["X_pca"]`` the joint PCA (active genes), ``obsm["X_umap"]``,
    ``obsm["X_scvi"]`` the latent of the source cell. ``metrics``: indexed by (key, level).
    """

    combined: ad.AnnData
    metrics: pd.DataFrame
    keys: list[str]

    def metrics_dict(self) -> dict:
        overall = self.metrics.loc[("overall", "all")].to_dict()
        by_group: dict[str, dict] = {}
        for (key, level), row in self.metrics.drop(index="overall", level="key").iterrows():
            by_group.setdefault(key, {})[level] = row.to_dict()
        return {"overall": overall, "by_group": by_group, **self.combined.uns["scvi_reconstruction"]}

    def report(self, out_dir: Path | None = None, *, title: str = "Conditional scVI: reconstruction") -> Report:
        """An HTML report section: metrics table, UMAPs and per-gene means (PNGs into ``out_dir``)."""
        report = Report(title)
        info = self.combined.uns["scvi_reconstruction"]
        kind = "decoded means" if info["kind"] == "mean" else "seeded draws from the model"
        report.text(
            f"{info['n_cells']:,} real cells and their reconstructions ({kind}) on {info['n_active_genes']:,} active "
            f"genes (non-zero in > 1% of real cells) of {self.combined.n_vars:,}. kNN mixing: 1 = "
            "reconstructed cells indistinguishable from real ones, 0 = separate; energy distance is "
            "shown next to the distance between two random halves of the real cells (the noise floor)."
        )
        report.table(self.metrics.reset_index())
        png = (lambda name: out_dir / name) if out_dir is not None else (lambda name: None)
        basis = "UMAP" if "X_umap" in self.combined.obsm else "PCA (PC1, PC2)"
        report.figure(
            self.umap_figure(), caption=f"Joint {basis} of real and reconstructed cells.", save_png=png("umap.png")
        )
        report.figure(
            self.means_figure(),
            caption="Per-gene mean log1p(CP10k), real vs reconstructed.",
            save_png=png("gene_means.png"),
        )
        return report

    def umap_figure(self):
        import matplotlib.pyplot as plt

        keys = ["source", *self.keys]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), squeeze=False)
        obsm = self.combined.obsm
        xy = obsm["X_umap"] if "X_umap" in obsm else obsm["X_pca"][:, :2]  # PCA when UMAP was skipped
        for ax, key in zip(axes[0], keys, strict=True):
            labels = self.combined.obs[key].astype(str).to_numpy()
            levels = sorted(set(labels))
            cmap = plt.get_cmap("tab10" if len(levels) <= 10 else "tab20")
            for i, level in enumerate(levels):
                mask = labels == level
                color = SOURCE_COLORS.get(level, cmap(i % cmap.N)) if key == "source" else cmap(i % cmap.N)
                ax.scatter(xy[mask, 0], xy[mask, 1], s=3, alpha=0.6, color=color, label=level, rasterized=True)
            ax.set_title(f"coloured by {key}")
            ax.set_xticks([])
            ax.set_yticks([])
            legend_outside(ax, markerscale=4, fontsize=7, ncol=1 if len(levels) <= 12 else 2)
        fig.tight_layout()
        return fig

    def means_figure(self):
        import matplotlib.pyplot as plt

        real = self.combined.obs["source"].to_numpy() == "real"
        x = np.asarray(self.combined.X)
        fig, ax = plt.subplots(figsize=(4.2, 4))
        zero = self.combined.var["always_zero"].to_numpy()
        for mask, color, label in ((~zero, "#3b6fb6", "genes"), (zero, "#c33", "always-zero genes")):
            ax.scatter(x[real][:, mask].mean(0), x[~real][:, mask].mean(0), s=4, color=color, label=label)
        top = float(x.mean(0).max()) * 1.05 or 1.0
        ax.plot([0, top], [0, top], color="#888", lw=0.8)
        ax.set_xlabel("real mean log1p(CP10k)")
        ax.set_ylabel("reconstructed mean log1p(CP10k)")
        legend_outside(ax, fontsize=7)
        return fig

    def write(self, out_dir: str | Path) -> Path:
        """Write ``reconstructed.h5ad``, ``metrics.json``, ``metrics.csv``, PNGs and
        ``report.html`` into ``out_dir`` (all or nothing)."""
        with atomic_output_dir(out_dir) as tmp:
            self.combined.write_h5ad(tmp / "reconstructed.h5ad", compression="lzf")  # dense, often large
            (tmp / "metrics.json").write_text(json.dumps(self.metrics_dict(), indent=1))
            self.metrics.to_csv(tmp / "metrics.csv")
            self.report(tmp).write(tmp / "report.html")
        return Path(out_dir)


def compare_reconstruction(
    model: ConditionalSCVI,
    adata: ad.AnnData,
    *,
    n_pcs: int = 30,
    k: int = 15,
    seed: int = 0,
    kind: str = "mean",
    umap: bool = True,
    extra_keys: Sequence[str] = (),
    max_cells: int | None = None,
    step: Callable[[str], None] = logger.debug,
) -> ReconstructionResult:
    """Reconstruct the cells of ``adata`` with ``model`` and compare them with the real cells.

    Parameters
    ----------
    model
        A trained model; ``adata`` must have its genes, keys and categories.
    n_pcs
        Components of the joint PCA.
    k
        Neighbours of the kNN mixing score.
    seed
        Seeds the control matching (perturbation mode), sampling, PCA, UMAP and subsampling.
    kind
        ``"mean"``: the reconstruction is the decoded mean (the default and the contract);
        ``"sample"``: a seeded draw of counts from the decoded distribution (a posterior
        predictive check: noise included, so real and reconstructed cells can mix).
    umap
        Compute the joint UMAP (figures need it; benchmarks may skip it).
    extra_keys
        obs columns to group metrics and colour figures by, besides the model's own keys.
    max_cells
        Compare a seeded subsample of at most this many cells (None: all); ``adata`` may be
        opened backed, then only the subsample is read.
    step
        Called with a short message as each long step starts (the CLI shows it as a spinner).
    """
    if kind not in ("mean", "sample"):
        raise InputError(f"kind must be 'mean' or 'sample', not '{kind}'.")
    adata = subsample_cells(adata, max_cells, seed)
    step(f"reconstructing {adata.n_obs:,} cells")
    counts = aligned_rows(adata, model.genespace, model.setup.counts_layer).read(0, adata.n_obs).toarray()
    out = model.reconstruct(adata, seed=seed)
    pred_counts = out["mean"] if kind == "mean" else out["sampled_counts"]
    real_log = normalize.log1p_normalize(counts)
    pred_log = normalize.log1p_normalize(pred_counts)
    active = (counts > 0).mean(0) > ACTIVE_MIN_FRACTION
    always_zero = np.isin(np.array(model.genespace.names), model.setup.always_zero_genes)

    step("joint PCA of real and reconstructed cells")
    joint = np.vstack([real_log[:, active], pred_log[:, active]])
    n_components = max(2, min(n_pcs, joint.shape[0] - 1, int(active.sum()) - 1))
    pca = PCA(n_components=n_components, random_state=seed).fit_transform(joint)
    n = adata.n_obs
    keys = list(dict.fromkeys([*model.setup.required_columns(), *extra_keys]))
    check_columns(adata, keys)
    obs = pd.concat([adata.obs[keys]] * 2, ignore_index=True)
    obs.index = [f"{name}-{src}" for src in ("real", "reconstructed") for name in adata.obs_names]
    obs["source"] = pd.Categorical(["real"] * n + ["reconstructed"] * n, categories=list(SOURCE_COLORS))
    combined = ad.AnnData(
        X=np.vstack([real_log, pred_log]).astype(np.float32),
        obs=obs,
        var=pd.DataFrame({"active": active, "always_zero": always_zero}, index=list(model.genespace.names)),
    )
    combined.layers["counts"] = np.vstack([counts, pred_counts]).astype(np.float32)
    combined.obsm["X_pca"] = pca.astype(np.float32)
    combined.obsm["X_scvi"] = np.vstack([out["latent"], out["latent"]])
    if umap:
        step(f"UMAP of {2 * n:,} cells")
        sc.pp.neighbors(combined, use_rep="X_pca", n_neighbors=k, random_state=seed)
        sc.tl.umap(combined, random_state=seed)

    step("metrics per group")
    metrics = metrics_by_group(
        {key: adata.obs[key].to_numpy() for key in keys},
        real_log=real_log[:, active],
        pred_log=pred_log[:, active],
        real_counts=counts,
        pred_counts=out["mean"],
        zero_probability=out["zero_probability"],
        embedding_real=pca[:n],
        embedding_pred=pca[n:],
        always_zero=always_zero,
        k=k,
        seed=seed,
    )
    combined.uns["scvi_reconstruction"] = {
        "n_cells": int(n),
        "n_active_genes": int(active.sum()),
        "n_always_zero_genes": int(always_zero.sum()),
        "n_pcs": int(n_components),
        "kind": kind,
        "genespace_digest": model.genespace.digest,
        "likelihood": model.config.likelihood,
        "zero_penalty": bool(model.config.zero_penalty),
    }
    if model.setup.perturbation_key is not None:
        combined.uns["scvi_reconstruction"]["perturbation_key"] = model.setup.perturbation_key
    return ReconstructionResult(combined, metrics, keys)


def subsample_cells(adata: ad.AnnData, max_cells: int | None, seed: int) -> ad.AnnData:
    """A seeded subsample of at most ``max_cells`` cells of ``adata`` (in file order), read into
    memory; ``adata`` itself when it is in memory and small enough."""
    if max_cells is not None and max_cells < 1:
        raise InputError(f"max_cells must be at least 1, not {max_cells}.")
    if max_cells is None or adata.n_obs <= max_cells:
        return adata.to_memory() if adata.isbacked else adata
    rows = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
    subset = adata[rows]
    return subset.to_memory() if adata.isbacked else subset.copy()
