"""Acceptance 1: simulated screen, held-out targets.

60 target genes whose downstream programs follow gene-gene co-expression; pretraining on
unperturbed cells of the same generator (disjoint control cells); fine-tuning with pretrained
and with random gene embeddings; cell-eval against the baselines on held-out targets.

    .venv/bin/python benchmarks/perturbation_simulated.py [--out /tmp/perturbation_simulated] [--seed 0]

Prints a markdown block (date, machine with load average, wall times); --write puts it into
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from cellsmith.perturbation.config import FinetuneConfig, PretrainConfig
from cellsmith.perturbation.experiment import compare, shared_space_and_pretraining, simulated_screen_and_pretraining

from _common import machine, today, write_section


def table_markdown(frame) -> str:
    """A DataFrame as a markdown table (4 decimals)."""
    cells = [[str(i), *(f"{v:.4f}" for v in row)] for i, row in zip(frame.index, frame.to_numpy(), strict=True)]
    header = ["", *map(str, frame.columns)]
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *cells])


def markdown(title: str, table, seconds: dict[str, float], command: str) -> str:
    """One BENCHMARKS.md block: title, command, date, machine (with load), table, wall times."""
    return "\n".join(
        [
            f"#### {title}",
            "",
            f"`{command}` — {today()}; {machine()}",
            "",
            table_markdown(table),
            "",
            *[f"- {name}: {value:.0f} s wall" for name, value in seconds.items()],
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/perturbation_simulated"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="Write the block into BENCHMARKS.md.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    screen, unperturbed = simulated_screen_and_pretraining(n_cells=10000, n_genes=1000, n_targets=60, seed=args.seed)
    space, pretrained = shared_space_and_pretraining(
        screen, {"unperturbed": unperturbed}, args.out, n_top=500,
        config=PretrainConfig(seed=args.seed, progress_bar=False),
    )
    pretrain_seconds = time.perf_counter() - start
    result = compare(
        screen, space, pretrained, args.out,
        config=FinetuneConfig(context_key="donor_id", seed=args.seed, progress_bar=False),
    )
    seconds = {"simulate + gene space + pretrain": pretrain_seconds, **result.seconds}
    title = (
        f"Simulated screen: {screen.n_obs} cells, 60 targets, held-out targets, {len(space)} genes, "
        f"{unperturbed.n_obs} unperturbed cells for pretraining (seed {args.seed})"
    )
    block = markdown(
        title, result.summary(), seconds, f".venv/bin/python benchmarks/perturbation_simulated.py --seed {args.seed}"
    )
    print(block)
    if args.write:
        write_section(f"perturbation-simulated-seed{args.seed}", block)


if __name__ == "__main__":
    main()
