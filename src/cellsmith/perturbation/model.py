"""User-facing perturbation model: fine-tune on a screen, predict, save, load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellsmith._logging import logger, seed_everything
from cellsmith.data import GeneSpace, parse_perturbation
from cellsmith.data.rows import BLOCK_ROWS, CountRows, count_rows
from cellsmith.errors import GeneSpaceError, InputError
from cellsmith.nn import TrainingPlan, torch_threads
from cellsmith.nn.base import CellsmithModel, deprecated
from cellsmith.nn.batches import dense_batch
from cellsmith.nn.saving import ModelFiles, load_legacy_state
from cellsmith.perturbation.config import FinetuneConfig
from cellsmith.perturbation.pretrain import PretrainedGenes
from cellsmith.perturbation.remap import GeneRemap, collate_batch
from cellsmith.perturbation.saved import read_legacy_info, require_digest
from cellsmith.perturbation.screen import Screen, prepare_screen
from cellsmith.perturbation.set_data import SetPairs
from cellsmith.perturbation.set_module import ControlSetResponse
from cellsmith.perturbation.splits import Split, split_screen
from cellsmith.perturbation.vocabulary import VOCABULARY_FILE, read_vocabulary

#: Info file of cellsmith 0.1 model folders (beside ``model.pt``).
LEGACY_INFO = "model_info.json"
#: Weights that folders written before target vocabularies and combinations lack.
NEW_WEIGHTS = ("vocabulary_embedding", "learned_embedding", "pair_effect.weight", "combination_scale")


class PerturbationModel(CellsmithModel):
    """Control-set response model in a fixed gene space.

    ``PerturbationModel(config).train(screen, genespace=..., pretrained=...)`` fine-tunes on a
    raw-count screen (pretrained or random gene embeddings); :meth:`predict` then gives perturbed
    cells of any perturbation (one target or a combination ``A+B``) whose targets are in the
    vocabulary or were learned in training, from control cells. A saved folder holds the
    weights, ``config.yaml``, ``genespace.json``, ``vocabulary.json`` and ``setup.json`` (label
    key, control label, counts layer, training perturbations, learned targets, pretraining and
    vocabulary digests, embedding width).

    Attributes
    ----------
    perturbation_key, control_label, counts_layer
        How the screen was read; :meth:`predict` reads control cells the same way.
    train_targets
        Perturbations seen in fine-tuning.
    vocabulary
        Genes with an embedding: the pretraining vocabulary (the gene space without pretraining).
    learned_targets
        Targets with no embedding in the vocabulary, given one learned in fine-tuning.
    pretrained_digest
        Digest of the pretraining gene space (None: random gene embeddings).
    split, screen
        The split and the screen of the last :meth:`train` call (None after :meth:`load`).
    """

    workflow = "perturbation"
    config_class = FinetuneConfig
    command = "cellsmith perturb finetune"

    def __init__(self, config: FinetuneConfig | None = None):
        super().__init__(config)
        self.perturbation_key = "target_gene"
        self.control_label = "non-targeting"
        self.counts_layer: str | None = None
        self.train_targets: list[str] = []
        self.vocabulary: GeneSpace | None = None
        self.learned_targets: list[str] = []
        self.pretrained_digest: str | None = None
        self.split: Split | None = None
        self.screen: Screen | None = None

    # ----------------------------------------------------------------- training
    @staticmethod
    def _vocabulary(genespace: GeneSpace, pretrained: PretrainedGenes | None) -> GeneSpace:
        """The genes with an embedding; refuses a pretraining of another gene space
        (GeneSpaceError naming both digests)."""
        if pretrained is None:
            return genespace
        pretrained.require_space(genespace)
        return pretrained.vocabulary

    def _build(self, genespace: GeneSpace, pretrained: PretrainedGenes | None, learned: Sequence[str] = ()) -> None:
        """A fresh module in ``genespace``: pretrained vocabulary embeddings or random gene
        embeddings, and one learned row per target of ``learned``."""
        config = self.config
        seed_everything(config.seed)
        self.vocabulary = self._vocabulary(genespace, pretrained)
        if pretrained is not None:
            table = torch.from_numpy(pretrained.vocabulary_embeddings)
        else:
            logger.info("no pretrained embeddings: random gene embeddings (width %d)", config.n_embed)
            table = torch.randn(len(genespace), config.n_embed)
        self.genespace, self.learned_targets = genespace, list(learned)
        self.pretrained_digest = pretrained.genespace.digest if pretrained is not None else None
        self.module = ControlSetResponse(
            table[: len(genespace)], config.hidden, freeze_embeddings=config.freeze_embeddings,
            vocabulary_embedding=table[len(genespace) :], n_learned=len(self.learned_targets),
        )

    def target_rows(self, label: str) -> list[int]:
        """Rows of the target table (vocabulary, then learned targets) of a perturbation label."""
        rows = []
        for gene in sorted(parse_perturbation(label, self.control_label)):
            if gene in self.vocabulary:
                rows.append(self.vocabulary.index(gene))
            else:
                rows.append(len(self.vocabulary) + self.learned_targets.index(gene))
        return rows

    def train(
        self,
        adata: ad.AnnData,
        *,
        genespace: GeneSpace,
        pretrained: PretrainedGenes | None = None,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        counts_layer: str | None = None,
        split: str = "heldout-perturbations",
        out_dir: str | Path | None = None,
    ) -> Self:
        """Check and split a raw-count screen, then fine-tune on the training cells of the split
        (early stopping on its validation cells).

        Parameters
        ----------
        adata
            The screen: raw counts in X or ``counts_layer``; ``obs[perturbation_key]`` holds the
            perturbation of every cell (``A``, ``A+B``, ``A_B``, ``A+ctrl``) or ``control_label``.
        genespace
            The model's gene space (that of ``pretrained``, when given).
        pretrained
            Vocabulary embeddings of :class:`PretrainedGenes`; random gene embeddings when None.
        split
            ``heldout-perturbations``, ``heldout-combinations`` or ``heldout-cells`` (see
            :func:`split_screen`); kept in :attr:`split`.
        out_dir
            Folder for checkpoints and ``logs/metrics.csv`` (a temporary folder when None).

        Raises
        ------
        GeneSpaceError
            ``pretrained`` was made in another gene space.
        InputError, ScaleError
            Duplicate cell names, unknown keys, no controls, too few cells, no raw counts.
        """
        config = self.config
        vocabulary = self._vocabulary(genespace, pretrained)
        if adata.obs_names.duplicated().any():
            raise InputError("cell names (obs_names) of the screen are not unique; run adata.obs_names_make_unique().")
        screen = prepare_screen(
            adata, genespace, perturbation_key=perturbation_key, control_label=control_label,
            context_key=config.context_key, missing_targets=config.missing_targets, min_cells=config.min_cells,
            counts_layer=counts_layer, vocabulary=vocabulary,
        )
        parts = split_screen(
            screen, mode=split, seed=config.seed, test_fraction=config.test_fraction,
            val_fraction=config.val_fraction, embedded=vocabulary,
        )
        trained = {g for p in parts.train_targets for g in screen.target_sets[p]}
        self._build(genespace, pretrained, [g for g in screen.unembedded if g in trained])
        self.perturbation_key, self.control_label, self.counts_layer = perturbation_key, control_label, counts_layer
        self.screen, self.split, self.train_targets = screen, parts, list(parts.train_targets)
        masks = parts.masks(screen.obs_names)
        logger.info(
            "fine-tuning on %d cells, %d perturbations, in %d genes (digest %s); %s; %d learned target embeddings",
            int(masks["train"].sum()), len(parts.train_targets), len(genespace), genespace.digest,
            f"pretrained embeddings of a {len(self.vocabulary)}-gene vocabulary (digest {self.vocabulary.digest})"
            if self.pretrained_digest else "random gene embeddings", len(self.learned_targets),
        )

        def loader(part: str, n_items: int, fixed: bool) -> torch.utils.data.DataLoader:
            pairs = SetPairs(
                screen, np.flatnonzero(masks[part]), self.target_rows, set_size=config.set_size,
                n_items=n_items, seed=config.seed + fixed, fixed=fixed,
            )
            return torch.utils.data.DataLoader(pairs, batch_size=config.batch_size, collate_fn=collate_batch)

        has_val = bool(masks["val"].any()) and bool(set(screen.labels[masks["val"]]) - {control_label})
        module, observed = self.module, torch.from_numpy(screen.observed)
        plan = TrainingPlan(
            module, config,
            loss=lambda b: module.loss(b["controls"], b["perturbed"], b["target"], observed, config.mean_weight),
        )
        self.fit_plan(
            plan, loader("train", config.steps_per_epoch * config.batch_size, False),
            loader("val", 4 * config.batch_size, True) if has_val else None,
            out_dir=out_dir, monitor="val_loss" if has_val else "train_loss",
        )
        return self

    @classmethod
    @deprecated(
        "PerturbationModel.create() is deprecated; use PerturbationModel(config).train(adata, genespace=..., "
        "pretrained=...), which builds the model itself."
    )
    def create(
        cls,
        genespace: GeneSpace,
        config: FinetuneConfig | None = None,
        *,
        pretrained: PretrainedGenes | None = None,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
    ) -> PerturbationModel:
        """cellsmith 0.1 entry point: an untrained model with its module (:meth:`train` builds a
        new one from its own arguments)."""
        model = cls(config)
        model._build(genespace, pretrained)
        model.perturbation_key, model.control_label = perturbation_key, control_label
        return model

    # ----------------------------------------------------------------- prediction
    def _check_targets(self, targets: Sequence[str]) -> None:
        if not targets:
            raise InputError("no targets to predict; pass --targets GENE[,GENE...].")
        known = set(self.vocabulary.names) | set(self.learned_targets)
        genes = {t: parse_perturbation(t, self.control_label) for t in targets}
        empty = [t for t, g in genes.items() if not g]
        if empty:
            raise InputError(f"{', '.join(empty)} name no target gene (a control label?); pass perturbations.")
        missing = sorted({g for gs in genes.values() for g in gs} - known)
        if missing:
            raise GeneSpaceError(
                f"targets {', '.join(missing[:8])} have no embedding: they are not in the model's vocabulary "
                f"({len(self.vocabulary)} genes, digest {self.vocabulary.digest}) and were not seen in "
                "fine-tuning. Pretrain on data that measure them, or fine-tune on cells where they are perturbed."
            )

    @torch.no_grad()
    def predict_cells(
        self, controls: sp.csr_matrix, contexts: np.ndarray, target: str, *, n_cells: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``n_cells`` perturbed cells (log1p(CP10k)) of the perturbation ``target`` (a label such
        as ``A`` or ``A+B``) from control cells ``(n, G)`` (CSR, in space order): controls are
        drawn (with replacement when too few), only the drawn rows are densified, and each
        context is one set, run on :attr:`device`."""
        device = self.device
        module = self.module.to(device).eval()
        picked = rng.choice(controls.shape[0], n_cells, replace=controls.shape[0] < n_cells)
        out = np.empty((n_cells, controls.shape[1]), dtype=np.float32)
        index = torch.tensor([self.target_rows(target)], device=device)  # (1, K)
        for context in np.unique(contexts[picked]):
            at = np.flatnonzero(contexts[picked] == context)
            cells = dense_batch(controls[picked[at]], device)[None]
            out[at] = module(cells, index)[0].cpu().numpy()
        return out

    def controls_in_space(
        self, adata: ad.AnnData, *, counts_layer: str | None = None
    ) -> tuple[sp.csr_matrix, np.ndarray]:
        """Control cells of ``adata`` (raw counts in ``counts_layer``, by default the layer the
        model was trained from) as CSR log1p(CP10k) in space order, and their contexts."""
        is_control = np.ones(adata.n_obs, dtype=bool)
        if self.perturbation_key in adata.obs:
            is_control = adata.obs[self.perturbation_key].astype(str).to_numpy() == self.control_label
        if not is_control.any():
            raise InputError(
                f"no control cells: every cell of the controls file has {self.perturbation_key} other "
                f"than '{self.control_label}'; pass a file of control cells."
            )
        layer = counts_layer if counts_layer is not None else self.counts_layer
        remap = GeneRemap(self.genespace, list(adata.var_names), name="controls")
        x = remap.transform(count_rows(adata, layer=layer), rows=is_control)
        key = self.config.context_key
        has_contexts = bool(key) and key in adata.obs
        contexts = adata.obs[key].astype(str).to_numpy()[is_control] if has_contexts else np.full(x.shape[0], "all")
        return x, contexts

    def predict(
        self,
        controls: ad.AnnData,
        targets: Sequence[str],
        *,
        cells_per_target: int = 100,
        seed: int = 0,
        counts_layer: str | None = None,
    ) -> ad.AnnData:
        """Predicted perturbed cells of each target plus the control cells, in cell-eval's format.

        The output is dense (predicted cells are): ``len(targets) x cells_per_target`` predicted
        cells and the control cells, float32, filled target by target and the controls block by
        block; the controls are read and kept sparse until then.

        Parameters
        ----------
        controls
            Raw-count control cells (cells of other labels in ``obs[perturbation_key]`` are left out).
        counts_layer
            Layer of the raw counts; by default the one the model was trained from (``"X"``: X).

        Returns
        -------
        AnnData
            ``X`` log1p(CP10k) (float32, genes of the gene space in its order);
            ``obs[perturbation_key]`` the target, or the control label for the input controls;
            ``uns["cellsmith"]["perturbation"]`` the gene-space digest, targets, label key,
            control label and counts layer.
        """
        self.require_trained()
        self._check_targets(list(targets))
        if cells_per_target < 1:
            raise InputError(f"--cells-per-target must be at least 1, got {cells_per_target}.")
        x, contexts = self.controls_in_space(controls, counts_layer=counts_layer)
        n_predicted = len(targets) * cells_per_target
        values = np.empty((n_predicted + x.shape[0], x.shape[1]), dtype=np.float32)
        with torch_threads(self.config.num_threads):
            rng = np.random.default_rng(seed)
            torch.manual_seed(seed)
            for i, target in enumerate(targets):
                values[i * cells_per_target : (i + 1) * cells_per_target] = self.predict_cells(
                    x, contexts, target, n_cells=cells_per_target, rng=rng
                )
        for start, block in CountRows(x).blocks(BLOCK_ROWS):
            values[n_predicted + start : n_predicted + start + block.shape[0]] = block.toarray()
        labels = [t for t in targets for _ in range(cells_per_target)] + [self.control_label] * x.shape[0]
        pred = ad.AnnData(
            X=values,
            obs=pd.DataFrame(
                {self.perturbation_key: pd.Categorical(labels)}, index=[f"pred{i}" for i in range(len(labels))]
            ),
            var=pd.DataFrame(index=list(self.genespace.names)),
        )
        pred.obs["context"] = np.concatenate([np.repeat("predicted", n_predicted), contexts])
        pred.uns["cellsmith"] = {
            "perturbation": {
                "genespace_digest": self.genespace.digest,
                "targets": list(targets),
                "perturbation_key": self.perturbation_key,
                "control_label": self.control_label,
                "counts_layer": self.counts_layer,
                "train_targets": self.train_targets,
                "pretrained": self.pretrained_digest is not None,
            }
        }
        return pred

    # ----------------------------------------------------------------- the model folder
    def setup_dict(self) -> dict[str, Any]:
        return {
            "genespace_digest": self.genespace.digest,
            "perturbation_key": self.perturbation_key,
            "control_label": self.control_label,
            "counts_layer": self.counts_layer,
            "train_targets": self.train_targets,
            "pretrained_digest": self.pretrained_digest,
            "vocabulary_digest": self.vocabulary.digest,
            "learned_targets": self.learned_targets,
            "n_embed": int(self.module.gene_embedding.shape[1]),
        }

    def extra_files(self) -> dict:
        return {**super().extra_files(), VOCABULARY_FILE: self.vocabulary.write}

    def restore(self, files: ModelFiles) -> None:
        space = require_digest(files)
        setup = files.setup
        self.perturbation_key, self.control_label = setup["perturbation_key"], setup["control_label"]
        self.counts_layer, self.train_targets = setup["counts_layer"], list(setup["train_targets"])
        self.pretrained_digest = setup["pretrained_digest"]
        self.vocabulary = read_vocabulary(files, space)
        self.learned_targets = list(setup.get("learned_targets", []))
        self.module = ControlSetResponse(
            torch.zeros(len(space), setup["n_embed"]), self.config.hidden,
            freeze_embeddings=self.config.freeze_embeddings,
            vocabulary_embedding=torch.zeros(len(self.vocabulary) - len(space), setup["n_embed"]),
            n_learned=len(self.learned_targets),
        )
        # Folders of cellsmith <= 0.2 have no vocabulary, learned or pairwise weights: their
        # fresh (empty or zero) values are exactly the model they were trained as.
        fresh = self.module.state_dict()
        self.module.load_state_dict({**{k: fresh[k] for k in NEW_WEIGHTS}, **files.weights})

    @classmethod
    def read_legacy(cls, path: Path) -> ModelFiles:
        """A cellsmith 0.1 folder (``model.pt``, ``model_info.json``): the state dict is read with
        ``weights_only=True``; its screen was read from X. ``save`` writes it in the current format."""
        info, space = read_legacy_info(path, LEGACY_INFO, cls.command)
        keys = (
            "genespace_digest", "perturbation_key", "control_label", "train_targets", "pretrained_digest", "n_embed",
        )
        return ModelFiles(
            path=path,
            config=FinetuneConfig.from_yaml(path / "config.yaml"),
            setup={**{k: info[k] for k in keys}, "counts_layer": None},
            weights=load_legacy_state(path / "model.pt"),
            genespace=space,
        )
