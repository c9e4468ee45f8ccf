"""Deconvolution on the shared real bulk sets with measured fractions: one table per set.

For each set, HP-VADE is trained (seeded) on the sorted Zheng 2017 PBMC reference restricted to
the genes reference and bulk share (what ``cellsmith deconvolve run`` does), then the bulk is
predicted without and with platform adaptation, each with and without the ``unknown`` fraction,
beside NNLS. HP-VADE's fractions are weighted by mRNA per cell (the default ``immune``); one row
keeps the reference's counts per cell (``--mrna-content reference``), one gives the unknown cells a
neutrophil's mRNA per cell (``--unknown-mrna 0.13``, what a user would set for whole blood).
Two ceiling rows replace the estimated unknown by its true share of reads (from the truth and
the measured mRNA per cell), converted to cells with the default and with 0.13.
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
from cellsmith.deconvolution.content import DEFAULT_MRNA, immune_content, unknown_cells
from cellsmith.deconvolution.unknown import UNKNOWN, with_unknown

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


#: mRNA per cell of truth columns whose names the immune table does not match (blood counts).
TRUTH_MRNA = {"Mon": immune_content(["Monocytes"])[0][0], "Lymphocytes": DEFAULT_MRNA}


def true_unknown_reads(truth: pd.DataFrame, mapping, absent: list[str]) -> np.ndarray:
    """The absent cells' true share of the bulk's reads: each truth column (the mapped ones and
    the absent ones) weighted by its measured mRNA per cell (content.py; 0.4 for cancer and
    other cells, as EPIC)."""
    columns = [*(column for pair in mapping for column in pair.truth), *absent]
    mrna = pd.Series(immune_content(columns)[0], index=columns)
    mrna.update(pd.Series({c: v for c, v in TRUTH_MRNA.items() if c in columns}))
    reads = truth[columns].fillna(0.0) * mrna
    return (reads[absent].sum(axis=1) / reads.sum(axis=1)).to_numpy()


#: The row whose unknown is a share of reads (the reference's weights keep it one).
READ_SHARE_ROW = "HP-VADE adapt, reference mRNA + unknown"


def predictions(model: Deconvolver, bulk: ad.AnnData, true_reads: np.ndarray) -> dict[str, pd.DataFrame]:
    """Every method's proportions: HP-VADE without / with adaptation, NNLS; +/- unknown; and, as
    a ceiling, the adapted types with the true unknown share of reads in place of the estimate."""
    plain, adapted = model.predict(bulk.copy()), model.predict(bulk.copy(), adapt=True)
    unweighted = model.predict(bulk.copy(), adapt=True, mrna_content="reference")
    neutrophil_like = model.predict(bulk.copy(), adapt=True, unknown_mrna=0.13)
    contents = [model.bulk_content(), model.bulk_content(unknown_mrna=0.13)]
    true_unknown = {
        f"HP-VADE adapt + true unknown reads, --unknown-mrna {content.unknown:g}": with_unknown(
            adapted.proportions, unknown_cells(true_reads, adapted.proportions.to_numpy(), content)
        )
        for content in contents
        if content is not None
    }
    return {
        **true_unknown,
        READ_SHARE_ROW: unweighted.with_unknown("hpvade"),
        "HP-VADE adapt + unknown, --unknown-mrna 0.13": neutrophil_like.with_unknown("hpvade"),
        "HP-VADE no-adapt": plain.proportions,
        "HP-VADE no-adapt + unknown": plain.with_unknown("hpvade"),
        "HP-VADE adapt": adapted.proportions,
        "HP-VADE adapt + unknown": adapted.with_unknown("hpvade"),
        "NNLS": plain.nnls,
        "NNLS + unknown": plain.with_unknown("nnls"),
    }


def seed_predictions(
    reference: ad.AnnData,
    bulk: ad.AnnData,
    config: DeconvolutionConfig,
    seeds: list[int],
    genes: list[str] | None,
    true_reads: np.ndarray,
) -> list[dict[str, pd.DataFrame]]:
    """:func:`predictions` of one model per seed (``config`` with that seed)."""
    return [
        predictions(
            Deconvolver(config.model_copy(update={"seed": seed})).train(
                reference, cell_type_key="cell_type", genes=genes
            ),
            bulk,
            true_reads,
        )
        for seed in seeds
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument(
        "--seeds",
        "--seed",
        default="0",
        help="Comma-separated seeds; with several, each seed's pooled CCC and the table "
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
    result = {
        "config": {
            "genes": args.genes,
            "seeds": seeds,
            "n_train_samples": args.n_train_samples,
            "max_epochs": args.max_epochs,
        }
    }
    for name in args.sets.split(","):
        filename, mapping, absent = SETS[name]
        bulk = read_bulk(DATA / filename)
        truth, type_map = bulk.obsm["flow_fractions"], read_mapping(MAPS / mapping)
        absent_truth = truth[absent].sum(axis=1, min_count=1)
        genes = reference.var_names.intersection(bulk.var_names)
        start = time.perf_counter()
        true_reads = true_unknown_reads(truth, type_map, absent)
        per_seed = seed_predictions(
            reference, bulk, config, seeds, list(genes) if args.genes == "shared" else None, true_reads
        )
        # Mean proportions over seeds (rows still sum to 1): one model's seed-to-seed spread averaged out.
        mean = {method: sum(p[method] for p in per_seed) / len(per_seed) for method in per_seed[0]}
        table = method_table(mean, truth, type_map, absent_truth)
        seconds = time.perf_counter() - start
        print(
            f"\n## {name} ({bulk.n_obs} samples, {len(genes):,} shared genes, {seconds:.0f} s, "
            f"load {os.getloadavg()[0]:.1f})"
        )
        if len(seeds) > 1:
            ccc = pd.DataFrame(
                {
                    f"seed {seed}": method_table(pred, truth, type_map, absent_truth)["ccc"]
                    for seed, pred in zip(seeds, per_seed, strict=True)
                }
            )
            ccc["mean of seeds"], ccc["ensemble"] = ccc.mean(axis=1), table["ccc"]
            print("pooled CCC per seed and of the ensemble (mean proportions):")
            print(ccc.round(3).to_string())
            result[name + "_ccc_per_seed"] = ccc.round(4).to_dict(orient="index")
        print(table.round(3).to_string())
        result[name] = table.round(4).to_dict(orient="index")
        # Under the reference's weights the estimated unknown is a share of reads, as true_reads.
        estimated = pd.DataFrame(
            {f"seed {seed}": p[READ_SHARE_ROW][UNKNOWN] for seed, p in zip(seeds, per_seed, strict=True)}
        )
        reads = estimated.assign(true=true_reads).mean()
        print("unknown share of reads, mean over samples (true vs estimated per seed):", reads.round(3).to_dict())
        result[name + "_unknown_reads"] = reads.round(4).to_dict()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
