"""Deconvolution on the shared real bulk sets with measured fractions: one table per set.

For each set, HP-VADE is trained (seeded) on the sorted Zheng 2017 PBMC reference restricted to
the genes reference and bulk share (what ``cellsmith deconvolve run`` does), then the bulk is
predicted without and with platform adaptation, each with and without the ``unknown`` fraction,
beside NNLS. HP-VADE's fractions are weighted by mRNA per cell (the default ``immune``); one row
keeps the reference's counts per cell (``--mrna-content reference``), one gives the unknown cells a
neutrophil's mRNA per cell (``--unknown-mrna 0.13``, what a user would set for whole blood).
Rows: methods; columns: pooled CCC and Pearson r over (sample, type) pairs, and per compared
type its Pearson r and bias (mean predicted - mean true). With the unknown fraction, the types'
proportions are fractions of all cells (types x (1 - unknown)), which is what the truth measures
in whole blood and tissue. ``r_unknown`` is Pearson r between the
unknown fraction and the measured cells the reference lacks (neutrophils, cancer + other).

    .venv/bin/python benchmarks/deconvolution_real.py [--sets hoek2015,GSE127813] [--seeds 0[,1,2]]
        [--config CFG.yaml] [--n-train-samples 3000 --max-epochs 30] [--genes shared|all] [--json out.json]

With several ``--seeds`` the tables are of the mean proportions over the seeds' models (a seed
ensemble), after each seed's pooled CCC.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellsmith.data import read_bulk
from cellsmith.deconvolution import DeconvolutionConfig, Deconvolver, compare, read_mapping
from cellsmith.deconvolution.unknown import UNKNOWN

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MAPS = Path(__file__).resolve().parent / "deconvolution_maps"
#: Set -> (file, type mapping, truth columns of cells the reference lacks).
SETS = {
    "hoek2015": ("hoek2015_pbmc_bulk.h5ad", "hoek2015.yaml", ["MyeloidDC"]),
    "GSE127813": ("GSE127813_whole_blood_bulk.h5ad", "gse127813.yaml", ["Neutrophils"]),
    "GSE60424": ("GSE60424_whole_blood_bulk.h5ad", "gse60424.yaml", ["Neu"]),
    "racle2017": ("racle2017_melanoma_lymph_node_bulk.h5ad", "racle2017.yaml", ["Cancer_cells", "other_cells"]),
}


def method_table(
    preds: dict[str, pd.DataFrame], truth: pd.DataFrame, mapping, unknown_truth: pd.Series
) -> pd.DataFrame:
    """One row per method: pooled CCC / r, per-type r and bias, r(unknown, absent cells)."""
    comparison = compare(preds, truth, mapping=mapping)
    rows = {}
    for method, pred in comparison.preds.items():
        row = {"ccc": comparison.pooled.loc[method, "ccc"], "r": comparison.pooled.loc[method, "pearson"]}
        for cell_type in comparison.truth.columns:
            row[f"r {cell_type}"] = comparison.per_type.loc[(method, cell_type), "pearson"]
            row[f"bias {cell_type}"] = float((pred[cell_type] - comparison.truth[cell_type]).mean())
        unknown = preds[method].get(UNKNOWN)
        usable = unknown_truth.notna()
        row["r_unknown"] = (
            float(np.corrcoef(unknown[usable], unknown_truth[usable])[0, 1])
            if unknown is not None and usable.sum() > 2 and unknown[usable].std() > 0
            else np.nan
        )
        rows[method] = row
    return pd.DataFrame(rows).T


def predictions(model: Deconvolver, bulk: ad.AnnData) -> dict[str, pd.DataFrame]:
    """Every method's proportions: HP-VADE without / with adaptation, NNLS; +/- unknown."""
    plain, adapted = model.predict(bulk.copy()), model.predict(bulk.copy(), adapt=True)
    unweighted = model.predict(bulk.copy(), adapt=True, mrna_content="reference")
    neutrophil_like = model.predict(bulk.copy(), adapt=True, unknown_mrna=0.13)
    return {
        "HP-VADE adapt, reference mRNA + unknown": unweighted.with_unknown("hpvade"),
        "HP-VADE adapt + unknown, --unknown-mrna 0.13": neutrophil_like.with_unknown("hpvade"),
        "HP-VADE no-adapt": plain.proportions,
        "HP-VADE no-adapt + unknown": plain.with_unknown("hpvade"),
        "HP-VADE adapt": adapted.proportions,
        "HP-VADE adapt + unknown": adapted.with_unknown("hpvade"),
        "NNLS": plain.nnls,
        "NNLS + unknown": plain.with_unknown("nnls"),
    }


def seed_predictions(
    reference: ad.AnnData, bulk: ad.AnnData, config: DeconvolutionConfig, seeds: list[int], genes: list[str] | None
) -> list[dict[str, pd.DataFrame]]:
    """:func:`predictions` of one model per seed (``config`` with that seed)."""
    return [
        predictions(
            Deconvolver(config.model_copy(update={"seed": seed})).train(
                reference, cell_type_key="cell_type", genes=genes
            ),
            bulk,
        )
        for seed in seeds
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument(
        "--seeds", "--seed", default="0", help="Comma-separated seeds; with several, each seed's pooled CCC and the table "
        "of their mean proportions (a seed ensemble) are printed.",
    )
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--n-train-samples", type=int, default=3000, help="Short training (default 3000).")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument(
        "--genes", choices=["shared", "all"], default="shared",
        help="Train on the genes reference and bulk share (as `deconvolve run`), or on every reference gene.",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    reference = ad.read_h5ad(DATA / "pbmc_sorted_zheng2017.h5ad")
    config = DeconvolutionConfig.from_yaml(
        args.config, progress_bar=False, n_train_samples=args.n_train_samples, max_epochs=args.max_epochs
    )
    result = {"config": {"genes": args.genes, "seeds": seeds, "n_train_samples": args.n_train_samples,
                         "max_epochs": args.max_epochs}}
    for name in args.sets.split(","):
        filename, mapping, absent = SETS[name]
        bulk = read_bulk(DATA / filename)
        truth, type_map = bulk.obsm["flow_fractions"], read_mapping(MAPS / mapping)
        absent_truth = truth[absent].sum(axis=1, min_count=1)
        genes = reference.var_names.intersection(bulk.var_names)
        start = time.perf_counter()
        per_seed = seed_predictions(reference, bulk, config, seeds, list(genes) if args.genes == "shared" else None)
        # Mean proportions over seeds (rows still sum to 1): one model's seed-to-seed spread averaged out.
        mean = {method: sum(p[method] for p in per_seed) / len(per_seed) for method in per_seed[0]}
        table = method_table(mean, truth, type_map, absent_truth)
        seconds = time.perf_counter() - start
        print(f"\n## {name} ({bulk.n_obs} samples, {len(genes):,} shared genes, {seconds:.0f} s, "
              f"load {os.getloadavg()[0]:.1f})")
        if len(seeds) > 1:
            ccc = pd.DataFrame({
                f"seed {seed}": method_table(pred, truth, type_map, absent_truth)["ccc"]
                for seed, pred in zip(seeds, per_seed)
            })
            ccc["mean of seeds"], ccc["ensemble"] = ccc.mean(axis=1), table["ccc"]
            print("pooled CCC per seed and of the ensemble (mean proportions):")
            print(ccc.round(3).to_string())
            result[name + "_ccc_per_seed"] = ccc.round(4).to_dict(orient="index")
        print(table.round(3).to_string())
        result[name] = table.round(4).to_dict(orient="index")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
