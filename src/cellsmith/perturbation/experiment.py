"""Pretrain -> fine-tune -> predict -> evaluate end to end, with and without pretraining.

Used by the demo (small) and the simulated benchmark (acceptance size). The simulated screen
and the pretraining cells come from one call of :func:`cellsmith.data.simulate.singlecell`,
so they share the generator's co-expression programs: half of the control cells (a disjoint
set) is the pretraining data, the rest stays in the screen. With unmeasured targets the screen
lacks their genes while the pretraining cells measure every gene (as a screen of 500 genes and
an atlas of 20,000 do).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from cellsmith.data import GeneSpace, cross_dataset_hvg, perturbed_genes, simulate
from cellsmith.perturbation.config import FinetuneConfig, PretrainConfig
from cellsmith.perturbation.evaluate import Evaluation
from cellsmith.perturbation.pretrain import PretrainedGenes
from cellsmith.perturbation.workflow import (
    HELDOUT_CONTROLS,
    HELDOUT_REAL,
    run_evaluate,
    run_finetune,
    run_predict,
    run_pretrain,
)


@dataclass
class Comparison:
    """The evaluation with pretrained embeddings (model and baselines) and with random vectors in
    their place (:func:`random_embeddings_like`: same vocabulary, so the same split)."""

    pretrained: Evaluation
    random: Evaluation
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        table = self.pretrained.summary.rename(index={"model": "model (pretrained)"})
        ablation = self.random.summary.loc[["model"]].rename(index={"model": "model (random embeddings)"})
        return pd.concat([table.iloc[:1], ablation, table.iloc[1:]])


def random_embeddings_like(pretrained: PretrainedGenes, *, seed: int) -> PretrainedGenes:
    """``pretrained`` with its embedding table replaced by Gaussian noise of the same per-dimension
    mean and SD: the control for what pretraining learnt. It keeps the vocabulary, so the split
    (which holds out only targets with an embedding) and the learned targets stay the same; a model
    without any pretraining embeds only the gene space and would hold out other targets."""
    control = copy.deepcopy(pretrained)
    table = pretrained.vocabulary_embeddings
    noise = np.random.default_rng(seed).normal(table.mean(axis=0), table.std(axis=0), size=table.shape)
    with torch.no_grad():
        control.module.gene_embedding.copy_(torch.as_tensor(noise, dtype=torch.float32))
    return control


def simulated_screen_and_pretraining(
    *, n_cells: int, n_genes: int, n_targets: int, seed: int, combinations: int = 0, unmeasured_targets: float = 0.0,
    control_fraction: float = 0.5,
) -> tuple[ad.AnnData, ad.AnnData]:
    """A simulated screen (``combinations`` doubles; the genes of ``unmeasured_targets`` of the
    targets not measured) and disjoint unperturbed cells of the same generator (raw counts)."""
    cells = simulate.singlecell(
        n_cells, n_genes, cell_types=1, donors=2, perturbations=n_targets, control_fraction=control_fraction,
        combinations=combinations, unmeasured_targets=unmeasured_targets, seed=seed,
    )
    controls = np.flatnonzero(cells.obs["target_gene"].astype(str).to_numpy() == simulate.CONTROL_LABEL)
    to_pretrain = np.random.default_rng(seed).permutation(controls)[: controls.size // 2]
    is_pretrain = np.isin(np.arange(cells.n_obs), to_pretrain)
    unperturbed = cells[is_pretrain].copy()
    del unperturbed.obs["target_gene"]
    measured = cells.var["measured"].to_numpy() if "measured" in cells.var else np.ones(cells.n_vars, dtype=bool)
    return cells[~is_pretrain][:, measured].copy(), unperturbed


def shared_space_and_pretraining(
    screen: ad.AnnData,
    unperturbed: dict[str, ad.AnnData],
    out_dir: Path,
    *,
    n_top: int,
    config: PretrainConfig,
) -> tuple[GeneSpace, PretrainedGenes]:
    """Cross-dataset HVGs (targets as priority genes) written to ``out_dir/hvg``; gene
    embeddings pretrained on ``unperturbed`` written to ``out_dir/pretrain``."""
    targets = perturbed_genes(screen.obs["target_gene"], simulate.CONTROL_LABEL)
    selection = cross_dataset_hvg({**unperturbed, "screen": screen}, n_top=n_top, priority_genes=targets)
    selection.write(out_dir / "hvg")
    run_pretrain(unperturbed, selection.genespace, out_dir / "pretrain", config=config)
    return selection.genespace, PretrainedGenes.load(out_dir / "pretrain")


def compare(
    screen: ad.AnnData,
    space: GeneSpace,
    pretrained: PretrainedGenes,
    out_dir: Path,
    *,
    config: FinetuneConfig,
    split: str = "heldout-perturbations",
    cells_per_target: int = 100,
    num_threads: int = 1,
) -> Comparison:
    """Fine-tune with pretrained and with random embeddings (:func:`random_embeddings_like`),
    predict the held-out cells, and evaluate both beside the baselines; wall times per step in
    ``Comparison.seconds``."""
    evaluations, seconds = {}, {}
    for name, prior in (("pretrained", pretrained), ("random", random_embeddings_like(pretrained, seed=config.seed))):
        evaluations[name], times = finetune_and_evaluate(
            screen, space, prior, out_dir, name=name, config=config, split=split,
            cells_per_target=cells_per_target, num_threads=num_threads,
        )
        seconds.update(times)
    return Comparison(evaluations["pretrained"], evaluations["random"], seconds)


def finetune_and_evaluate(
    screen: ad.AnnData,
    space: GeneSpace,
    pretrained: PretrainedGenes | None,
    out_dir: Path,
    *,
    name: str,
    config: FinetuneConfig,
    split: str,
    cells_per_target: int = 100,
    num_threads: int = 1,
) -> tuple[Evaluation, dict[str, float]]:
    """Fine-tune into ``out_dir/model_{name}``, predict the split's test perturbations and evaluate
    them beside the baselines; the wall times of both steps."""
    model_dir = out_dir / f"model_{name}"
    start = time.perf_counter()
    _, parts = run_finetune(screen, space, model_dir, config=config, pretrained=pretrained, split=split)
    pred = run_predict(
        model_dir, ad.read_h5ad(model_dir / HELDOUT_CONTROLS), parts.test_targets,
        out_dir / f"pred_{name}.h5ad", cells_per_target=cells_per_target,
    )
    seconds = {f"finetune+predict ({name})": time.perf_counter() - start}
    start = time.perf_counter()
    evaluation = run_evaluate(
        pred, ad.read_h5ad(model_dir / HELDOUT_REAL), out_dir / f"eval_{name}", baselines_from=model_dir,
        num_threads=num_threads,
    )
    seconds[f"cell-eval, model + {len(evaluation.summary) - 1} baselines ({name})"] = time.perf_counter() - start
    return evaluation, seconds
