"""Acceptance 3 of deconvolution: pseudo-bulk simulation speed and predict speed.

    .venv/bin/python benchmarks/deconvolution_speed.py [--model MODEL_DIR]

1. 10,000 pseudo-bulks x 500 cells from the full 2,140 x 8,863 sorted-PBMC reference (best and
   median of 3 runs; peak RSS of the process).
2. With --model: `Deconvolver.load` then `predict` on 1,000 raw-count bulk samples over all
   8,863 reference genes (audit, gene alignment, CPM, network, NNLS, fit R^2), best of 3.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import anndata as ad
import numpy as np

from cellsmith.data import simulate
from cellsmith.data.pseudobulk import pseudobulk
from cellsmith.deconvolution import Deconvolver

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _timed(function, repeats: int = 3) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    reference = ad.read_h5ad(DATA / "pbmc_sorted_zheng2017.h5ad")
    result: dict = {"load_average_before": os.getloadavg()}
    times = _timed(lambda: pseudobulk(reference, 10_000, cell_type_key="cell_type", cells_per_sample=500, seed=0))
    result["pseudobulk_10000x500_s"] = {"best": round(min(times), 2), "median": round(float(np.median(times)), 2)}
    result["peak_rss_gb_after_pseudobulk"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)
    if args.model is not None:
        start = time.perf_counter()
        model = Deconvolver.load(args.model)
        result["load_s"] = round(time.perf_counter() - start, 2)
        bulk = simulate.bulk(reference, 1000, cells_per_sample=500, seed=1)
        times = _timed(lambda: model.predict(bulk))
        result["predict_1000_s"] = {"best": round(min(times), 2), "median": round(float(np.median(times)), 2)}
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
