"""The four steps of the CLI as functions: pretrain, fine-tune, predict, evaluate.

Each reads its inputs, checks them all before any work, and writes its output folder or file
atomically (nothing is left behind when it fails).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
from lightning.fabric.utilities.rank_zero import rank_zero_only

from cellsmith._logging import logger
from cellsmith.data import GeneSpace, HVGSelection
from cellsmith.errors import InputError
from cellsmith.perturbation.baselines import Baselines
from cellsmith.perturbation.config import FinetuneConfig, PretrainConfig
from cellsmith.perturbation.evaluate import (
    Evaluation,
    baseline_predictions,
    evaluate,
    real_in_prediction_space,
    write_evaluation,
)
from cellsmith.perturbation.model import PerturbationModel
from cellsmith.perturbation.pretrain import PretrainedGenes
from cellsmith.perturbation.scvi_baseline import scvi_prediction, train_scvi_baseline
from cellsmith.perturbation.splits import Split
from cellsmith.report import atomic_output_dir, write_atomic

HELDOUT_REAL = "heldout_real.h5ad"
HELDOUT_CONTROLS = "heldout_controls.h5ad"


def read_genespace(genes_dir: str | Path) -> GeneSpace:
    """The gene space of a ``cellsmith genes hvg`` folder, with what it was built from logged."""
    selection = HVGSelection.read(genes_dir)
    space = selection.genespace
    logger.info(
        "gene space %s: %d genes, digest %s; genes mapped per dataset of the selection: %s",
        genes_dir, len(space), space.digest, {n: d["n_mapped"] for n, d in selection.datasets.items()},
    )
    return space


def is_main_process() -> bool:
    """False in the extra processes that Lightning starts for a multi-device run (``--devices 2``)."""
    return rank_zero_only.rank == 0


@contextmanager
def output_dir(path: str | Path) -> Iterator[Path]:
    """:func:`~cellsmith.report.atomic_output_dir` in the main process; a scratch folder in the
    extra processes of a multi-device run, which must not write ``path``."""
    if is_main_process():
        with atomic_output_dir(path) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory(prefix="cellsmith_rank_") as scratch:
            yield Path(scratch)


def run_pretrain(
    datasets: Mapping[str, ad.AnnData], genespace: GeneSpace, out_dir: str | Path, *, config: PretrainConfig,
    counts_layer: str | None = None,
) -> PretrainedGenes:
    """Pretrain gene embeddings and write ``out_dir`` (the model folder, checkpoints and logs)."""
    with output_dir(out_dir) as tmp:
        result = PretrainedGenes(config).train(datasets, genespace=genespace, counts_layer=counts_layer, out_dir=tmp)
        result.save(tmp)
    return result


def run_finetune(
    screen_data: ad.AnnData,
    genespace: GeneSpace,
    out_dir: str | Path,
    *,
    config: FinetuneConfig,
    pretrained: PretrainedGenes | None = None,
    split: str = "heldout-perturbations",
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    counts_layer: str | None = None,
) -> tuple[PerturbationModel, Split]:
    """Fine-tune on a screen and write the model folder.

    ``out_dir`` holds the model (``weights.safetensors``, ``config.yaml``, ``genespace.json``,
    ``setup.json``, ``cellsmith_model.json``), ``baselines.npz``, ``split.json``,
    ``heldout_real.h5ad`` (raw counts of the test cells) and ``heldout_controls.h5ad`` (the test
    control cells, inputs of ``predict``).
    """
    with output_dir(out_dir) as tmp:
        model = PerturbationModel(config).train(
            screen_data, genespace=genespace, pretrained=pretrained, perturbation_key=perturbation_key,
            control_label=control_label, counts_layer=counts_layer, split=split, out_dir=tmp,
        )
        screen, parts = model.screen, model.split
        train = parts.masks(screen.obs_names)["train"]
        model.save(tmp)
        Baselines.fit(
            screen.x, np.where(train, screen.labels, None), control_label=control_label,
            genespace=genespace, n_components=config.linear_components, ridge=config.linear_ridge,
        ).save(tmp / "baselines.npz")
        parts.write(tmp / "split.json")
        (tmp / "dropped_targets.json").write_text(json.dumps(screen.dropped_targets, indent=2))
        if config.scvi_baseline:
            train_scvi_baseline(
                screen_data[np.asarray(parts.train_cells + parts.val_cells)].copy(), tmp,
                perturbation_key=perturbation_key, control_label=control_label,
                context_key=config.context_key, max_epochs=config.scvi_max_epochs, seed=config.seed,
                counts_layer=counts_layer,
            )
        test = screen_data[np.asarray(parts.test_cells)].copy()
        test.write_h5ad(tmp / HELDOUT_REAL)
        labels = test.obs[perturbation_key].astype(str).to_numpy()
        test[labels == control_label].write_h5ad(tmp / HELDOUT_CONTROLS)
    if is_main_process():
        logger.info("model written to %s; test targets: %s", out_dir, ", ".join(parts.test_targets))
    return model, parts


def run_predict(
    model_dir: str | Path, controls: ad.AnnData, targets: Sequence[str], out: str | Path, *,
    cells_per_target: int = 100, seed: int = 0, counts_layer: str | None = None,
) -> ad.AnnData:
    """Predict and write ``out`` (h5ad in cell-eval's format; the model folder in its uns).

    ``counts_layer`` overrides the layer the model was trained from (``"X"``: X)."""
    model = PerturbationModel.load(model_dir)
    pred = model.predict(controls, targets, cells_per_target=cells_per_target, seed=seed, counts_layer=counts_layer)
    pred.uns["cellsmith"]["perturbation"]["model_dir"] = str(Path(model_dir).resolve())
    write_atomic(out, lambda tmp: pred.write_h5ad(tmp))
    return pred


def run_evaluate(
    pred: ad.AnnData, real: ad.AnnData, out_dir: str | Path, *, baselines_from: str | Path | None = None,
    num_threads: int = 1, seed: int = 0, perturbation_key: str | None = None, counts_layer: str | None = None,
) -> Evaluation:
    """Score ``pred`` (and, with ``baselines_from`` = a model folder, its baselines) against raw-count
    ``real``; write ``per_perturbation.csv``, ``summary.csv``, ``mean_shift.png``, ``report.html``
    and, when the model folder's ``split.json`` names the test perturbations' categories ("seen
    2/2", ...), ``summary_by_category.csv``.

    The label key, control label and counts layer are those the prediction records in
    ``uns["cellsmith"]["perturbation"]`` (written by :func:`run_predict`); ``perturbation_key``
    and ``counts_layer`` override them."""
    info = pred.uns.get("cellsmith", {}).get("perturbation", {})
    key = perturbation_key or info.get("perturbation_key", "target_gene")
    layer = counts_layer if counts_layer is not None else info.get("counts_layer")
    control_label = info.get("control_label", "non-targeting")
    if key not in pred.obs:
        raise InputError(
            f"the prediction has no obs column '{key}'; pass the output of `cellsmith perturb predict` "
            "(or --perturbation-key with its label column)."
        )
    truth = real_in_prediction_space(real, pred, perturbation_key=key, control_label=control_label, counts_layer=layer)
    predictions = {"model": pred}
    if baselines_from is not None:
        path = Path(baselines_from) / "baselines.npz"
        if not path.is_file():
            raise InputError(f"{path} does not exist; pass the model folder written by `cellsmith perturb finetune`.")
        predictions.update(
            baseline_predictions(
                pred, Baselines.load(path), perturbation_key=key, control_label=control_label, seed=seed
            )
        )
        controls = Path(baselines_from) / HELDOUT_CONTROLS
        scvi = scvi_prediction(
            Path(baselines_from), pred, ad.read_h5ad(controls) if controls.is_file() else None, perturbation_key=key,
            control_label=control_label, seed=seed,
        )
        if scvi is not None:
            predictions["conditional_scvi"] = scvi
    model_dir = baselines_from if baselines_from is not None else info.get("model_dir")
    split_file = Path(model_dir) / "split.json" if model_dir is not None else None
    categories = Split.read(split_file).categories if split_file is not None and split_file.is_file() else None
    with atomic_output_dir(out_dir) as tmp:
        evaluation = evaluate(
            predictions, truth, perturbation_key=key, control_label=control_label, num_threads=num_threads,
            categories=categories, seed=seed,
        )
        notes = [
            f"{len(evaluation.real_shift)} perturbations, {truth.n_obs} real cells, {pred.n_vars} genes "
            f"(gene space {info.get('genespace_digest', GeneSpace(pred.var_names).digest)}); "
            f"{'pretrained' if info.get('pretrained') else 'random'} gene embeddings."
        ]
        write_evaluation(evaluation, tmp, title="Perturbation response: evaluation", notes=notes)
    return evaluation
