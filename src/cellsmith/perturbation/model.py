"""User-facing perturbation model: fine-tune on a screen, predict, save, load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellsmith._logging import logger, seed_everything
from cellsmith.data import GeneSpace, require_counts
from cellsmith.errors import GeneSpaceError, InputError
from cellsmith.nn import load_best_weights, make_trainer, torch_threads
from cellsmith.perturbation.config import FinetuneConfig
from cellsmith.perturbation.pretrain import PretrainedGenes
from cellsmith.perturbation.remap import GeneRemap, collate_batch
from cellsmith.perturbation.saved import read_info, write_info
from cellsmith.perturbation.screen import Screen
from cellsmith.perturbation.set_data import SetPairs
from cellsmith.perturbation.plan import LossPlan
from cellsmith.perturbation.set_module import ControlSetResponse
from cellsmith.perturbation.splits import Split

MODEL_INFO = "model_info.json"


class PerturbationModel:
    """Control-set response model in a fixed gene space.

    Build it with :meth:`create` (pretrained or random gene embeddings), :meth:`train` it on a
    screen, then :meth:`predict` perturbed cells of any target of the gene space from control
    cells. A saved directory holds the weights, ``config.yaml``, ``genespace.json`` and
    ``model_info.json`` (label key, control label, training targets, pretraining digest).
    """

    def __init__(
        self,
        genespace: GeneSpace,
        config: FinetuneConfig,
        module: ControlSetResponse,
        *,
        pretrained_digest: str | None,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        train_targets: Sequence[str] = (),
    ):
        self.genespace = genespace
        self.config = config
        self.module = module
        self.pretrained_digest = pretrained_digest
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.train_targets = list(train_targets)

    @classmethod
    def create(
        cls,
        genespace: GeneSpace,
        config: FinetuneConfig | None = None,
        *,
        pretrained: PretrainedGenes | None = None,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
    ) -> PerturbationModel:
        """A fresh model; with ``pretrained`` its gene space must be ``genespace`` exactly
        (GeneSpaceError naming both digests otherwise), else embeddings are random."""
        config = config or FinetuneConfig()
        seed_everything(config.seed)
        if pretrained is not None:
            pretrained.require_space(genespace)
            embedding = torch.from_numpy(pretrained.embeddings)
        else:
            logger.info("no pretrained embeddings: random gene embeddings (width %d)", config.n_embed)
            embedding = torch.randn(len(genespace), config.n_embed)
        module = ControlSetResponse(embedding, config.hidden, freeze_embeddings=config.freeze_embeddings)
        return cls(
            genespace, config, module,
            pretrained_digest=pretrained.genespace.digest if pretrained is not None else None,
            perturbation_key=perturbation_key, control_label=control_label,
        )

    def train(self, screen: Screen, split: Split, *, work_dir: str | Path) -> None:
        """Fine-tune on the training cells of ``split``; early stopping on its validation cells."""
        cfg = self.config
        seed_everything(cfg.seed)
        with torch_threads(cfg.num_threads):
            masks = split.masks(screen.obs_names)
            self.train_targets = list(split.train_targets)
            logger.info(
                "fine-tuning on %d cells, %d perturbations, in %d genes (digest %s); %s",
                int(masks["train"].sum()), len(split.train_targets), len(self.genespace), self.genespace.digest,
                "pretrained gene embeddings" if self.pretrained_digest else "random gene embeddings",
            )

            def loader(part: str, n_items: int, fixed: bool) -> torch.utils.data.DataLoader:
                pairs = SetPairs(
                    screen, np.flatnonzero(masks[part]), self.genespace, set_size=cfg.set_size,
                    n_items=n_items, seed=cfg.seed + fixed, fixed=fixed,
                )
                return torch.utils.data.DataLoader(pairs, batch_size=cfg.pairs_per_batch, collate_fn=collate_batch)

            has_val = bool(masks["val"].any()) and bool(set(screen.labels[masks["val"]]) - {screen.control_label})
            val = loader("val", 4 * cfg.pairs_per_batch, True) if has_val else None
            observed = torch.from_numpy(screen.observed)
            module = self.module
            plan = LossPlan(
                module,
                lambda b: module.loss(b["controls"], b["perturbed"], b["target"], observed, cfg.mean_weight),
                learning_rate=cfg.learning_rate,
            )
            trainer = make_trainer(
                work_dir, max_epochs=cfg.max_epochs, monitor="val_loss" if has_val else "train_loss",
                patience=cfg.patience, progress_bar=cfg.progress_bar,
            )
            trainer.fit(plan, loader("train", cfg.steps_per_epoch * cfg.pairs_per_batch, False), val)
            load_best_weights(trainer, plan)
            self.module.eval()

    def _check_targets(self, targets: Sequence[str]) -> None:
        missing = [t for t in targets if t not in self.genespace]
        if missing:
            raise GeneSpaceError(
                f"targets {', '.join(missing[:8])} are not in the model's gene space ({len(self.genespace)} "
                f"genes, digest {self.genespace.digest}), so they have no gene embedding; a target "
                "must be a priority gene of the gene space used for pretraining and fine-tuning."
            )
        if not targets:
            raise InputError("no targets to predict; pass --targets GENE[,GENE...].")

    @torch.no_grad()
    def predict_cells(
        self, controls: np.ndarray, contexts: np.ndarray, target: str, *, n_cells: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``n_cells`` perturbed cells (log1p(CP10k)) from control cells ``(n, G)`` in space
        order: controls are drawn (with replacement when too few) and each context is one set."""
        self.module.eval()
        picked = rng.choice(controls.shape[0], n_cells, replace=controls.shape[0] < n_cells)
        out = np.empty((n_cells, controls.shape[1]), dtype=np.float32)
        index = torch.tensor([self.genespace.index(target)])
        for context in np.unique(contexts[picked]):
            at = np.flatnonzero(contexts[picked] == context)
            cells = torch.from_numpy(controls[picked[at]]).float()[None]
            out[at] = self.module(cells, index)[0].numpy()
        return out

    def controls_in_space(self, adata: ad.AnnData, *, counts_layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Control cells of ``adata`` (raw counts) as log1p(CP10k) in space order, and contexts."""
        if self.perturbation_key in adata.obs:
            labels = adata.obs[self.perturbation_key].astype(str)
            adata = adata[labels.to_numpy() == self.control_label]
        if adata.n_obs == 0:
            raise InputError(
                f"no control cells: every cell of the controls file has {self.perturbation_key} other "
                f"than '{self.control_label}'; pass a file of control cells."
            )
        remap = GeneRemap(self.genespace, list(adata.var_names), name="controls")
        x = remap.transform(sp.csr_matrix(require_counts(adata, layer=counts_layer))).toarray()
        key = self.config.context_key
        contexts = adata.obs[key].astype(str).to_numpy() if key and key in adata.obs else np.full(adata.n_obs, "all")
        return x, contexts

    def predict(
        self, controls: ad.AnnData, targets: Sequence[str], *, cells_per_target: int = 100, seed: int = 0,
        counts_layer: str | None = None,
    ) -> ad.AnnData:
        """Predicted perturbed cells of each target plus the control cells, in cell-eval's format.

        Returns
        -------
        AnnData
            ``X`` log1p(CP10k) (float32, genes of the gene space in its order); obs
            ``target_gene`` (the target, or the control label for the input controls);
            ``uns["cellsmith"]["perturbation"]`` the gene-space digest, targets and control label.
        """
        self._check_targets(list(targets))
        if cells_per_target < 1:
            raise InputError(f"--cells-per-target must be at least 1, got {cells_per_target}.")
        x, contexts = self.controls_in_space(controls, counts_layer=counts_layer)
        with torch_threads(self.config.num_threads):
            rng = np.random.default_rng(seed)
            torch.manual_seed(seed)
            blocks = [self.predict_cells(x, contexts, t, n_cells=cells_per_target, rng=rng) for t in targets]
            labels = [t for t in targets for _ in range(cells_per_target)] + [self.control_label] * x.shape[0]
            pred = ad.AnnData(
                X=np.vstack([*blocks, x]).astype(np.float32),
                obs=pd.DataFrame({"target_gene": pd.Categorical(labels)}, index=[f"pred{i}" for i in range(len(labels))]),
                var=pd.DataFrame(index=list(self.genespace.names)),
            )
            pred.obs["context"] = np.concatenate([np.repeat("predicted", len(targets) * cells_per_target), contexts])
            pred.uns["cellsmith"] = {
                "perturbation": {
                    "genespace_digest": self.genespace.digest,
                    "targets": list(targets),
                    "control_label": self.control_label,
                    "train_targets": self.train_targets,
                    "pretrained": self.pretrained_digest is not None,
                }
            }
            return pred

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), directory / "model.pt")
        self.config.to_yaml(directory / "config.yaml")
        info = {
            "pretrained_digest": self.pretrained_digest,
            "perturbation_key": self.perturbation_key,
            "control_label": self.control_label,
            "train_targets": self.train_targets,
            "n_embed": int(self.module.gene_embedding.shape[1]),
        }
        write_info(directory, MODEL_INFO, self.genespace, info)

    @classmethod
    def load(cls, directory: str | Path) -> PerturbationModel:
        info, space = read_info(directory, MODEL_INFO, "cellsmith perturb finetune")
        directory = Path(directory)
        config = FinetuneConfig.from_yaml(directory / "config.yaml")
        module = ControlSetResponse(torch.zeros(len(space), info["n_embed"]), config.hidden, freeze_embeddings=config.freeze_embeddings)
        module.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
        module.eval()
        return cls(
            space, config, module, pretrained_digest=info["pretrained_digest"],
            perturbation_key=info["perturbation_key"], control_label=info["control_label"],
            train_targets=info["train_targets"],
        )
