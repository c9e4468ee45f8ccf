"""Pretraining phase: one embedding per gene of the target vocabulary, learnt from unperturbed
cells.

:class:`PretrainedGenes` follows the model API of every workflow
(``PretrainedGenes(config).train(datasets, genespace=...)``, ``.save(dir)``,
``PretrainedGenes.load(dir)``). Its folder holds the gene space and its digest, so that
fine-tuning can refuse a different gene space instead of silently pairing embeddings with the
wrong genes, and the vocabulary (the gene space followed by every other gene expressed in the
pretraining sources, :mod:`~cellsmith.perturbation.vocabulary`) with its own digest, so that a
target outside the gene space still has an embedding; the embeddings are the
``gene_embedding`` tensor of ``weights.safetensors`` (one row per vocabulary gene).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Self

import anndata as ad
import numpy as np
import pandas as pd
import torch

from cellsmith._logging import logger, seed_everything
from cellsmith.data import GeneSpace
from cellsmith.data.rows import count_rows
from cellsmith.data.splits import split_indices
from cellsmith.errors import GeneSpaceError, InputError
from cellsmith.nn import TrainingPlan
from cellsmith.nn.base import CellsmithModel, deprecated
from cellsmith.nn.saving import ModelFiles
from cellsmith.perturbation.config import PretrainConfig
from cellsmith.perturbation.pretrain_module import GeneEmbeddingAE
from cellsmith.perturbation.remap import EpochBatches, RemappedCells, collate_batch
from cellsmith.perturbation.saved import read_legacy_info, require_digest
from cellsmith.perturbation.vocabulary import VOCABULARY_FILE, build_vocabulary, read_vocabulary

#: Fewer cells than this are all used for training (no validation cells, no early stopping).
MIN_CELLS_TO_VALIDATE = 20


class PretrainedGenes(CellsmithModel):
    """Gene embeddings of a target vocabulary, learnt by masked-expression pretraining.

    Attributes
    ----------
    genespace
        The gene space; row ``i`` of :attr:`embeddings` is gene ``genespace.names[i]``.
    vocabulary
        The gene space followed by the other expressed genes of the sources; row ``i`` of
        :attr:`vocabulary_embeddings` is gene ``vocabulary.names[i]``.
    mapped_per_source
        Genes of the space measured by each pretraining source.
    counts_layer
        Layer of the raw counts pretraining read (None: X).
    """

    workflow = "perturbation-pretrain"
    config_class = PretrainConfig
    command = "cellsmith perturb pretrain"

    def __init__(self, config: PretrainConfig | None = None):
        super().__init__(config)
        self.mapped_per_source: dict[str, int] = {}
        self.counts_layer: str | None = None
        self.vocabulary: GeneSpace | None = None

    # ----------------------------------------------------------------- training
    def train(
        self,
        datasets: Mapping[str, ad.AnnData],
        *,
        genespace: GeneSpace,
        counts_layer: str | None = None,
        out_dir: str | Path | None = None,
    ) -> Self:
        """Learn one embedding per gene of the vocabulary (``genespace`` followed by the other
        genes detected in ``config.vocabulary_min_cells`` cells of a source) from unperturbed
        raw-count cells.

        Parameters
        ----------
        datasets
            ``{name: AnnData of raw counts}``; genes are matched by name (``var_names``). An
            AnnData opened backed (:func:`cellsmith.data.rows.read_backed`) is read from disk by
            row blocks, shuffled between blocks and within a buffer of blocks; in memory the rows
            are shuffled freely. Both give the same model up to the shuffling order.
        genespace
            The gene space (from :func:`cellsmith.data.cross_dataset_hvg`).
        counts_layer
            Layer with raw counts in every dataset (X when None).
        out_dir
            Folder for checkpoints and ``logs/metrics.csv`` (a temporary folder when None).
        """
        config = self.config
        if not datasets:
            raise InputError("pretraining needs at least one dataset; got none.")
        seed_everything(config.seed)
        sources = [(name, count_rows(a, layer=counts_layer), list(a.var_names)) for name, a in datasets.items()]
        vocabulary = build_vocabulary(sources, genespace, min_cells=config.vocabulary_min_cells)
        cells = RemappedCells(sources, vocabulary, cache=config.cache)
        if len(cells) < 2:
            raise InputError(f"pretraining needs at least 2 cells; the datasets hold {len(cells)}.")
        logger.info(
            "pretraining on %d cells in a vocabulary of %d genes (digest %s): the %d genes of the space "
            "(digest %s) and %d other expressed genes; mapped per source: %s",
            len(cells), len(vocabulary), vocabulary.digest, len(genespace), genespace.digest,
            len(vocabulary) - len(genespace), cells.mapped_per_source,
        )
        if any(a.isbacked for a in datasets.values()):
            logger.info("sources read from disk by row blocks")
        mean, sd = cells.gene_moments()
        self.genespace, self.counts_layer, self.mapped_per_source = genespace, counts_layer, cells.mapped_per_source
        self.vocabulary = vocabulary
        module = self.module = GeneEmbeddingAE(
            len(vocabulary), config.n_embed, config.hidden,
            gene_mean=torch.from_numpy(mean), gene_sd=torch.from_numpy(sd),
        )
        plan = TrainingPlan(
            module, config, loss=lambda batch: module.loss(batch["x"], batch["observed"], config.mask_fraction)
        )
        parts = split_indices(
            len(cells), {"val": config.val_fraction}, seed=config.seed, min_items=MIN_CELLS_TO_VALIDATE - 1
        )

        def loader(rows: np.ndarray, shuffle: bool) -> torch.utils.data.DataLoader:
            batches = EpochBatches(cells, rows, batch_size=config.batch_size, seed=config.seed, shuffle=shuffle)
            return torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=collate_batch)

        has_val = parts["val"].size > 0
        self.fit_plan(
            plan, loader(parts["train"], True), loader(parts["val"], False) if has_val else None,
            out_dir=out_dir, monitor="val_loss" if has_val else "train_loss",
        )
        return self

    # ----------------------------------------------------------------- what fine-tuning reads
    @property
    def vocabulary_embeddings(self) -> np.ndarray:
        """``(n_vocabulary, n_embed)`` float32, rows in vocabulary order (gene space first)."""
        self.require_trained()
        return self.module.gene_embedding.detach().cpu().numpy().astype(np.float32)

    @property
    def embeddings(self) -> np.ndarray:
        """``(n_genes, n_embed)`` float32, rows in gene-space order."""
        return self.vocabulary_embeddings[: len(self.genespace)]

    def predict(self) -> pd.DataFrame:
        """The gene embeddings as a table (genes of the space x embedding dimensions)."""
        return pd.DataFrame(self.embeddings, index=list(self.genespace.names))

    def require_space(self, space: GeneSpace) -> None:
        """Refuse fine-tuning in any other gene space (a different order counts)."""
        if space.digest != self.genespace.digest:
            raise GeneSpaceError(
                f"the fine-tuning gene space (digest {space.digest}, {len(space)} genes) is not "
                f"the pretraining gene space (digest {self.genespace.digest}, "
                f"{len(self.genespace)} genes): the pretrained gene embeddings would point at the "
                "wrong genes. Fine-tune with the same --genes folder that pretraining used."
            )
        logger.info("fine-tuning uses the pretraining gene indices: %d genes, digest %s", len(space), space.digest)

    @classmethod
    def from_embeddings(
        cls,
        genespace: GeneSpace,
        embeddings: np.ndarray,
        config: PretrainConfig | None = None,
        mapped_per_source: Mapping[str, int] | None = None,
    ) -> PretrainedGenes:
        """Gene embeddings made elsewhere (one row per gene of ``genespace``, in its order), to
        fine-tune from or to save in this folder format."""
        if embeddings.shape[0] != len(genespace):
            raise InputError(
                f"{embeddings.shape[0]} embedding rows for a gene space of {len(genespace)} genes; "
                "pass one row per gene, in gene-space order."
            )
        config = (config or PretrainConfig()).model_copy(update={"n_embed": int(embeddings.shape[1])})
        model = cls(config)
        model.genespace = model.vocabulary = genespace
        model.mapped_per_source = dict(mapped_per_source or {})
        # The encoder is never used downstream; seeded so that the same table gives the same folder.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model.module = GeneEmbeddingAE(len(genespace), config.n_embed, config.hidden)
        with torch.no_grad():
            model.module.gene_embedding.copy_(torch.as_tensor(embeddings, dtype=torch.float32))
        model.module.eval()
        return model

    # ----------------------------------------------------------------- the model folder
    def setup_dict(self) -> dict:
        return {
            "genespace_digest": self.genespace.digest,
            "vocabulary_digest": self.vocabulary.digest,
            "counts_layer": self.counts_layer,
            "mapped_per_source": self.mapped_per_source,
            "n_embed": int(self.module.gene_embedding.shape[1]),
        }

    def extra_files(self) -> dict:
        return {**super().extra_files(), VOCABULARY_FILE: self.vocabulary.write}

    def restore(self, files: ModelFiles) -> None:
        space = require_digest(files)
        self.vocabulary = read_vocabulary(files, space)
        self.counts_layer = files.setup["counts_layer"]
        self.mapped_per_source = files.setup["mapped_per_source"]
        self.module = GeneEmbeddingAE(len(self.vocabulary), files.setup["n_embed"], self.config.hidden)
        self.module.load_state_dict(files.weights)

    @classmethod
    def read_legacy(cls, path: Path) -> ModelFiles:
        """A cellsmith 0.1 pretraining folder (``gene_embeddings.npy``, ``pretrain_info.json``):
        its embeddings load (NumPy, no pickle); ``save`` writes it in the current format."""
        info, space = read_legacy_info(path, "pretrain_info.json", cls.command)
        embeddings = np.load(path / "gene_embeddings.npy", allow_pickle=False)
        legacy = cls.from_embeddings(
            space, embeddings, PretrainConfig.from_yaml(path / "config.yaml"), info["mapped_per_source"]
        )
        return ModelFiles(
            path=path, config=legacy.config, setup=legacy.setup_dict(), weights=legacy.module.state_dict(),
            genespace=space,
        )


@deprecated(
    "cellsmith.perturbation.pretrain() is deprecated; use PretrainedGenes(config).train(datasets, genespace=...)."
)
def pretrain(
    datasets: Mapping[str, ad.AnnData],
    genespace: GeneSpace,
    *,
    config: PretrainConfig | None = None,
    work_dir: str | Path,
    counts_layer: str | None = None,
) -> PretrainedGenes:
    """cellsmith 0.1 entry point: :meth:`PretrainedGenes.train` with checkpoints under ``work_dir``."""
    return PretrainedGenes(config).train(datasets, genespace=genespace, counts_layer=counts_layer, out_dir=work_dir)
