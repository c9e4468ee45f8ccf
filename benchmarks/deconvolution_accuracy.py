"""Acceptance 1-3 of deconvolution: held-out accuracy, real bulk, training time and memory.

Trains HP-VADE on a stratified half of the sorted Zheng 2017 PBMC reference, tests on 1,000
pseudo-bulks built from the other half, then predicts the two real bulk sets with flow truth.
Prints a JSON summary (and writes it to --json).

    .venv/bin/python benchmarks/deconvolution_accuracy.py [--config CFG.yaml] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellsmith.data import read_bulk
from cellsmith.data.pseudobulk import pseudobulk
from cellsmith.data.splits import split_indices
from cellsmith.deconvolution import DeconvolutionConfig, Deconvolver, compare, nnls_proportions, read_mapping
from cellsmith.deconvolution.reference import mean_cpm_by_type

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MAPS = Path(__file__).resolve().parent / "deconvolution_maps"
REAL = {
    "hoek2015": ("hoek2015_pbmc_bulk.h5ad", "hoek2015.yaml"),
    "GSE127813": ("GSE127813_whole_blood_bulk.h5ad", "gse127813.yaml"),
}


def _pooled(comparison) -> dict:
    return {m: {k: round(float(v), 4) for k, v in row.items()} for m, row in comparison.pooled.iterrows()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-model", type=Path, default=None, help="Also save the trained model here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reference = ad.read_h5ad(DATA / "pbmc_sorted_zheng2017.h5ad")
    labels = reference.obs["cell_type"].astype(str).to_numpy()
    parts = split_indices(labels.size, {"test": 0.5}, seed=args.seed, groups=labels)
    train_cells, test_cells = parts["train"], parts["test"]
    config = DeconvolutionConfig.from_yaml(args.config, seed=args.seed, progress_bar=False)

    start = time.perf_counter()
    model = Deconvolver(config).train(reference[train_cells].copy(), cell_type_key="cell_type")
    train_s = time.perf_counter() - start
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    if args.save_model:
        model.save(args.save_model)
    test = pseudobulk(reference, 1000, cells=test_cells, cell_types=model.cell_types, seed=10_000 + args.seed)
    # A cellsmith pseudo-bulk (uns["pseudobulk"]) keeps the reference's counts per cell as weights.
    held_out = model.evaluate(test, test.obsm["proportions"])
    # The plain baseline of the issue: NNLS on the mean-CPM signature of all genes.
    train_labels = labels[train_cells]
    all_genes_signature = mean_cpm_by_type(reference.X[train_cells], train_labels, model.cell_types)
    plain, coefficients = nnls_proportions(test.X, all_genes_signature)
    # NNLS estimates read fractions; dividing by each type's counts per cell gives cell fractions.
    totals = np.asarray(reference.X[train_cells].sum(axis=1)).ravel()
    per_cell = np.array([totals[train_labels == t].mean() for t in model.cell_types])
    corrected = coefficients / per_cell
    corrected /= corrected.sum(axis=1, keepdims=True)
    plain_nnls = compare(
        {
            "NNLS all genes": pd.DataFrame(plain, columns=model.cell_types),
            "NNLS all genes / mRNA content": pd.DataFrame(corrected, columns=model.cell_types),
        },
        test.obsm["proportions"].reset_index(drop=True),
    )
    result = {
        "config": config.model_dump(),
        "n_genes": len(model.genespace),
        "epochs": model.training["epochs_trained"],
        "train_seconds": round(train_s, 1),
        "peak_rss_gb": round(peak_rss_gb, 3),
        "load_average": os.getloadavg(),
        "held_out": _pooled(held_out),
        "held_out_mean_type_r": {
            m: round(float(held_out.per_type.loc[m, "pearson"].mean()), 4) for m in held_out.pooled.index
        },
        "held_out_per_type": held_out.per_type.round(4).reset_index().to_dict(orient="records"),
        "held_out_nnls_all_genes": _pooled(plain_nnls),
        "held_out_nnls_all_genes_mean_type_r": {
            m: round(float(plain_nnls.per_type.loc[m, "pearson"].mean()), 4) for m in plain_nnls.pooled.index
        },
    }
    for name, (filename, mapping) in REAL.items():
        bulk = read_bulk(DATA / filename)
        comparison = model.evaluate(bulk, bulk.obsm["flow_fractions"], mapping=read_mapping(MAPS / mapping))
        result[name] = _pooled(comparison)
        result[name + "_fit"] = bulk.obs[["fit_r2_log_hpvade", "fit_r2_log_nnls"]].round(3).to_dict(orient="list")
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
