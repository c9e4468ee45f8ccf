"""Perturbation response: one gene space from pretraining to fine-tuning, a target vocabulary
beyond it, a control-set model of single and combined perturbations, Virtual Cell Challenge
metrics and scale-free scores against baselines.

- :class:`PretrainedGenes`: one embedding per gene of the vocabulary (the gene space, then every
  other gene expressed in the pretraining data)
  (``PretrainedGenes(PretrainConfig()).train(datasets, genespace=space)``);
- :class:`PerturbationModel`: control set + embeddings of a set of targets (``A``, ``A+B``) ->
  perturbed set (``PerturbationModel(FinetuneConfig()).train(screen, genespace=space, pretrained=genes)``);
- :class:`Baselines`: no change, perturbation mean, linear (PCA + ridge), additive;
- :func:`evaluate`: cell-eval metrics, the baseline-normalised score, top-50-DE Pearson r and
  the energy distance ratio, per split category.
"""

from cellsmith._lazy import lazy_exports

_EXPORTS = {
    "BASELINES": "cellsmith.perturbation.baselines",
    "Baselines": "cellsmith.perturbation.baselines",
    "Evaluation": "cellsmith.perturbation.evaluate",
    "FinetuneConfig": "cellsmith.perturbation.config",
    "GeneRemap": "cellsmith.perturbation.remap",
    "PerturbationModel": "cellsmith.perturbation.model",
    "PretrainConfig": "cellsmith.perturbation.config",
    "PretrainedGenes": "cellsmith.perturbation.pretrain",
    "RemappedCells": "cellsmith.perturbation.remap",
    "Screen": "cellsmith.perturbation.screen",
    "Split": "cellsmith.perturbation.splits",
    "evaluate": "cellsmith.perturbation.evaluate",
    "prepare_screen": "cellsmith.perturbation.screen",
    "pretrain": "cellsmith.perturbation.pretrain",
    "split_screen": "cellsmith.perturbation.splits",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
