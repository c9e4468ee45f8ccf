"""Demo section of deconvolution: HP-VADE and NNLS on simulated PBMC pseudo-bulk."""

from __future__ import annotations

from pathlib import Path

from cellsmith.data import simulate
from cellsmith.data.splits import split_indices
from cellsmith.datasets import simulated_pbmc
from cellsmith.deconvolution.config import DeconvolutionConfig
from cellsmith.deconvolution.evaluate import evaluation_report
from cellsmith.deconvolution.model import Deconvolver
from cellsmith.report import Report


def demo_section(out_dir: Path, *, seed: int = 0) -> Report:
    """Train on half of a simulated PBMC reference, predict bulk made from the other half."""
    cells = simulated_pbmc(n_cells=3000, n_genes=600, seed=seed)
    # Bulk from the other half of the cells: the model never saw these cells.
    labels = cells.obs["cell_type"].astype(str).to_numpy()
    parts = split_indices(cells.n_obs, {"bulk": 0.5}, seed=seed, groups=labels)
    reference = cells[parts["train"]].copy()
    bulk = simulate.bulk(cells[parts["bulk"]].copy(), 200, cells_per_sample=500, seed=seed + 1)
    config = DeconvolutionConfig(
        n_marker_genes=None, n_train_samples=4000, n_val_samples=400, max_epochs=30, patience=6, seed=seed,
        progress_bar=False,
    )
    model = Deconvolver(config).train(reference, cell_type_key="cell_type")
    model.save(out_dir / "model")
    # A cellsmith pseudo-bulk (uns["pseudobulk"]) keeps the reference's counts per cell as weights.
    comparison = model.evaluate(bulk, bulk.obsm["proportions"])
    report = evaluation_report(
        comparison,
        title="Deconvolution: HP-VADE vs NNLS on simulated PBMC bulk",
        fit=bulk.obs[["fit_r2_log_hpvade", "fit_r2_log_nnls"]],
        training=model.training,
        history=model.history,
        save_png_dir=out_dir,
    )
    bulk.obsm["proportions_hpvade"].to_csv(out_dir / "proportions.csv", index_label="sample")
    bulk.obsm["proportions_nnls"].to_csv(out_dir / "proportions.nnls.csv", index_label="sample")
    comparison.pooled.to_csv(out_dir / "pooled_metrics.csv")
    return report
