"""Acceptance 4a of retrieval: 100,000 queries x 1,000 library entries ranked and scored in <= 5 s.

Times ``score`` (mean library, cosine) plus ``retrieval_metrics`` (ranks, hit@k, MRR, nDCG@5,
confidence AUC) on random 64-dimensional embeddings, best of three runs.

    .venv/bin/python benchmarks/retrieval_speed.py [--queries 100000] [--entries 1000] [--write]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cellsmith.metrics.retrieval import retrieval_metrics
from cellsmith.retrieval import build_library, score

from _common import machine, today, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--write", action="store_true", help="write the result into BENCHMARKS.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # library: one centroid per perturbation from 5 training cells each
    codes = np.repeat(np.arange(args.entries), 5)
    library = build_library("mean", rng.normal(size=(codes.size, args.dim)).astype(np.float32), codes,
                            n_candidates=args.entries, similarity="cosine", seed=0)
    queries = rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    truth = rng.integers(0, args.entries, args.queries)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        metrics = retrieval_metrics(score(library, queries), truth)
        times.append(time.perf_counter() - start)
    best = min(times)
    verdict = "pass" if best <= 5 else "FAIL"
    text = (
        f"`.venv/bin/python benchmarks/retrieval_speed.py --write` — {today()}; {machine()}\n\n"
        f"{args.queries:,} queries x {args.entries:,} library entries (d = {args.dim}): scoring + ranking + "
        f"all metrics in **{best:.2f} s** (best of 3: {', '.join(f'{t:.2f}' for t in times)} s); target <= 5 s: "
        f"**{verdict}**. (Random embeddings: MRR {metrics['mrr']:.4f}, as expected for chance.)"
    )
    print(text)
    if args.write:
        write_section("retrieval-speed", text)


if __name__ == "__main__":
    main()
