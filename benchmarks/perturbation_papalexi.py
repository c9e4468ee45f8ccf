"""Acceptances 2 and 4: the Papalexi 2021 THP-1 ECCITE-seq screen, both splits.

Gene space: cross-dataset HVGs of the screen and the PBMC files of ../shared/data (Zheng 2017
sorted and frozen donor A, Kang 2018 control cells) with the targets as priority genes;
pretraining on those PBMCs; fine-tuning (default config, replicate as context) with
pretrained and random gene embeddings; cell-eval of the model and the baselines (with the
conditional scVI as a fourth baseline on the held-out-cells split: it cannot predict unseen
targets). The fine-tuning wall time includes the scVI baseline's training where it is on.

    .venv/bin/python benchmarks/perturbation_papalexi.py [--data ../shared/data] [--out /tmp/perturbation_papalexi]

Prints a markdown block per split (wall times of fine-tuning + prediction and of cell-eval);
--write puts them into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from cellsmith.data import read
from cellsmith.perturbation.config import FinetuneConfig, PretrainConfig
from cellsmith.perturbation.experiment import compare, shared_space_and_pretraining

from _common import write_section
from perturbation_simulated import markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/perturbation_papalexi"))
    parser.add_argument("--splits", default="heldout-perturbations,heldout-cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="Write the blocks into BENCHMARKS.md.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    screen = read(args.data / "papalexi2021_thp1_eccite.h5ad")
    kang = read(args.data / "kang2018_ifnb_pbmc_subset.h5ad")
    unperturbed = {
        "pbmc_sorted": read(args.data / "pbmc_sorted_zheng2017.h5ad"),
        "pbmc_donorA": read(args.data / "pbmc_frozen_donorA_zheng2017.h5ad"),
        "kang_control": kang[kang.obs["condition"].astype(str) == "control"].copy(),
    }
    start = time.perf_counter()
    space, pretrained = shared_space_and_pretraining(
        screen, unperturbed, args.out, n_top=2000, config=PretrainConfig(seed=args.seed, progress_bar=False)
    )
    pretrain_seconds = time.perf_counter() - start
    for split in args.splits.split(","):
        result = compare(
            screen, space, pretrained, args.out / split,
            config=FinetuneConfig(
                context_key="bio_rep", seed=args.seed, progress_bar=False, scvi_baseline=split == "heldout-cells"
            ),
            split=split,
        )
        seconds = {"gene space + pretrain (once)": pretrain_seconds, **result.seconds}
        title = (
            f"Papalexi 2021 THP-1, {split}: {len(space)} genes, test targets "
            f"{', '.join(result.pretrained.real_shift.index)} (seed {args.seed})"
        )
        block = markdown(
            title, result.summary(), seconds, f".venv/bin/python benchmarks/perturbation_papalexi.py --seed {args.seed}"
        )
        print(block, flush=True)
        if args.write:
            write_section(f"perturbation-papalexi-{split}-seed{args.seed}", block)


if __name__ == "__main__":
    main()
