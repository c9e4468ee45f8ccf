"""Demo section: a small pretrain -> fine-tune -> evaluate run on a simulated screen."""

from __future__ import annotations

from pathlib import Path

from cellsmith.perturbation.config import FinetuneConfig, PretrainConfig
from cellsmith.perturbation.evaluate import shift_figure
from cellsmith.perturbation.experiment import compare, shared_space_and_pretraining, simulated_screen_and_pretraining
from cellsmith.report import Report


def demo_section(out_dir: Path, *, seed: int = 0) -> Report:
    """Pretrain gene embeddings on unperturbed cells, fine-tune with and without them, score
    held-out targets with cell-eval beside the baselines."""
    report = Report("Perturbation response: pretrain -> fine-tune -> evaluate")
    screen, unperturbed = simulated_screen_and_pretraining(n_cells=3000, n_genes=300, n_targets=20, seed=seed)
    space, pretrained = shared_space_and_pretraining(
        screen, {"unperturbed": unperturbed}, out_dir, n_top=200,
        config=PretrainConfig(max_epochs=30, n_embed=32, hidden=[64], seed=seed, progress_bar=False),
    )
    comparison = compare(
        screen, space, pretrained, out_dir,
        config=FinetuneConfig(
            max_epochs=15, steps_per_epoch=20, set_size=32, hidden=64, n_embed=32, context_key="donor_id",
            seed=seed, progress_bar=False,
        ),
        cells_per_target=60,
    )
    report.text(
        f"A simulated screen ({screen.n_obs} cells, 20 target genes, 2 donors as contexts) and "
        f"{unperturbed.n_obs} unperturbed cells of the same generator for pretraining; one gene "
        "space (cross-dataset HVGs with the targets as priority genes) for both phases; held-out "
        "targets predicted through their gene embeddings. Small settings so that the demo is quick; "
        "BENCHMARKS.md has the full-size comparison."
    )
    summary = comparison.summary()
    summary.to_csv(out_dir / "summary.csv")
    report.table(summary)
    best = summary["normalized_score"].idxmax()
    report.text(
        f"Best normalised score at this small size: {best} ({summary.loc[best, 'normalized_score']:.3f}); "
        f"pretrained vs random gene embeddings: {summary['normalized_score'].iloc[0]:.3f} vs "
        f"{summary['normalized_score'].iloc[1]:.3f}."
    )
    report.figure(
        shift_figure(comparison.pretrained),
        caption="Predicted vs real mean shift per gene of held-out targets (pretrained model; grey: "
        "perturbation-mean baseline).",
        save_png=out_dir / "mean_shift.png",
    )
    return report
