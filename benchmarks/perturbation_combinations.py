"""Issue 13, acceptance 2: simulated screens with double perturbations, most targets unmeasured.

Per seed: a screen of 24 single targets (half of them not measured) and 30 doubles
(``simulate.singlecell``: additive effects plus an interaction term, buffering on average),
pretraining on unperturbed cells of the same generator that measure every gene (the target
vocabulary), fine-tuning with ``--split heldout-combinations`` (held-out doubles with both singles
seen, held-out singles and the doubles containing them), cell-eval plus the scale-free scores,
per split category. The model is compared with ``additive`` on held-out doubles (seen 2/2) and
with ``linear`` on held-out singles.

    .venv/bin/python benchmarks/perturbation_combinations.py [--seeds 0,1,2] [--out /tmp/perturbation_combinations]

Each seed's screen and model folder (``split.json``, ``heldout_*.h5ad``) stay under ``--out`` for
the STATE peer (benchmarks/perturbation_state.py). Prints a markdown block; --write puts it into
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from cellsmith.perturbation.config import FinetuneConfig, PretrainConfig
from cellsmith.perturbation.experiment import (
    finetune_and_evaluate,
    shared_space_and_pretraining,
    simulated_screen_and_pretraining,
)

from _common import machine, peak_rss_gb, today, write_section
from perturbation_simulated import table_markdown

SCREEN = dict(n_cells=6000, n_genes=600, n_targets=24, combinations=30, unmeasured_targets=0.5, control_fraction=0.3)
SCORES = ["pearson_top50_de", "normalized_score", "energy_ratio", "mae"]
#: (category, model, baseline it must beat) of the acceptance.
CLAIMS = (("seen 2/2", "additive"), ("unseen single", "linear"))


def one_seed(seed: int, out: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """The per-category table of one seed and its wall times."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    screen, unperturbed = simulated_screen_and_pretraining(seed=seed, **SCREEN)
    screen.write_h5ad(out / "screen.h5ad")
    space, pretrained = shared_space_and_pretraining(
        screen, {"unperturbed": unperturbed}, out, n_top=400, config=PretrainConfig(seed=seed, progress_bar=False)
    )
    seconds = {"simulate + gene space + pretrain": time.perf_counter() - start}
    evaluation, times = finetune_and_evaluate(
        screen, space, pretrained, out, name="pretrained", split="heldout-combinations",
        config=FinetuneConfig(context_key="donor_id", seed=seed, progress_bar=False),
    )
    table = evaluation.by_category.reset_index().assign(seed=seed)
    return table, {**seconds, **times}


def verdicts(tables: pd.DataFrame) -> list[str]:
    """One line per claim: per seed, does the model beat the baseline on both scores?"""
    lines = []
    for category, baseline in CLAIMS:
        rows = tables[tables["category"] == category].set_index(["seed", "model"])
        if rows.empty:
            lines.append(f"- {category}: no such held-out perturbations in these screens.")
            continue
        for score in ("pearson_top50_de", "normalized_score"):
            seeds = sorted(rows.index.get_level_values("seed").unique())
            wins = [rows.loc[(s, "model"), score] > rows.loc[(s, baseline), score] for s in seeds]
            lines.append(
                f"- {category}, {score}: model beats {baseline} in {sum(wins)} of {len(seeds)} seeds "
                f"(model {rows.xs('model', level='model')[score].mean():.3f} vs {baseline} "
                f"{rows.xs(baseline, level='model')[score].mean():.3f}, mean over seeds)."
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/perturbation_combinations"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--write", action="store_true", help="Write the block into BENCHMARKS.md.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tables, seconds = [], {}
    for seed in map(int, args.seeds.split(",")):
        table, times = one_seed(seed, args.out / f"seed{seed}")
        tables.append(table)
        seconds.update({f"{k}, seed {seed}": v for k, v in times.items()})
        print(table.to_string(), flush=True)
    tables = pd.concat(tables)
    tables.to_csv(args.out / "by_category.csv", index=False)
    grouped = tables.groupby(["category", "model"], sort=False)
    mean = grouped[SCORES].mean()
    mean.index = [f"{c} / {m}" for c, m in mean.index]
    block = "\n".join([
        f"#### Simulated combination screens: {SCREEN['n_targets']} targets ({SCREEN['unmeasured_targets']:.0%} "
        f"unmeasured) + {SCREEN['combinations']} doubles, heldout-combinations, seeds {args.seeds}",
        "",
        f"`.venv/bin/python benchmarks/perturbation_combinations.py --seeds {args.seeds}` — {today()}; {machine()}; "
        f"peak RSS {peak_rss_gb():.2f} GiB",
        "",
        "Mean over seeds per split category (normalized_score: cell-eval's, against perturbation_mean, on "
        "the category's perturbations alone).",
        "",
        table_markdown(mean),
        "",
        *verdicts(tables),
        "",
        *[f"- {name}: {value:.0f} s wall" for name, value in seconds.items()],
        "",
    ])
    print(block)
    if args.write:
        write_section("perturbation-combinations", block)


if __name__ == "__main__":
    main()
