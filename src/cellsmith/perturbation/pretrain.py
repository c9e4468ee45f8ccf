"""Pretraining phase: one embedding per gene of the space, learnt from unperturbed cells.

The saved directory holds the gene space and its digest, so that fine-tuning can refuse a
different gene space instead of silently pairing embeddings with the wrong genes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import torch

from cellsmith._logging import logger, seed_everything
from cellsmith.data import GeneSpace, require_counts
from cellsmith.errors import GeneSpaceError, InputError
from cellsmith.nn import load_best_weights, make_trainer, torch_threads
from cellsmith.perturbation.config import PretrainConfig
from cellsmith.perturbation.plan import LossPlan
from cellsmith.perturbation.pretrain_module import GeneEmbeddingAE
from cellsmith.perturbation.remap import RemappedCells, collate_batch
from cellsmith.perturbation.saved import read_info, write_info

INFO_FILE = "pretrain_info.json"


@dataclass
class PretrainedGenes:
    """Gene embeddings of a gene space and where they came from.

    Attributes
    ----------
    genespace
        The gene space; row ``i`` of :attr:`embeddings` is gene ``genespace.names[i]``.
    embeddings
        ``(n_genes, n_embed)`` float32.
    config
        The pretraining config.
    mapped_per_source
        Genes of the space measured by each pretraining source.
    """

    genespace: GeneSpace
    embeddings: np.ndarray
    config: PretrainConfig
    mapped_per_source: dict[str, int] = field(default_factory=dict)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.to_yaml(directory / "config.yaml")
        np.save(directory / "gene_embeddings.npy", self.embeddings)
        info = {"n_genes": len(self.genespace), "n_embed": int(self.embeddings.shape[1]), "mapped_per_source": self.mapped_per_source}
        write_info(directory, INFO_FILE, self.genespace, info)

    @classmethod
    def load(cls, directory: str | Path) -> PretrainedGenes:
        info, space = read_info(directory, INFO_FILE, "cellsmith perturb pretrain")
        directory = Path(directory)
        return cls(
            genespace=space,
            embeddings=np.load(directory / "gene_embeddings.npy"),
            config=PretrainConfig.from_yaml(directory / "config.yaml"),
            mapped_per_source=info["mapped_per_source"],
        )

    def require_space(self, space: GeneSpace) -> None:
        """Refuse fine-tuning in any other gene space (a different order counts)."""
        if space.digest != self.genespace.digest:
            raise GeneSpaceError(
                f"the fine-tuning gene space (digest {space.digest}, {len(space)} genes) is not "
                f"the pretraining gene space (digest {self.genespace.digest}, "
                f"{len(self.genespace)} genes): the pretrained gene embeddings would point at the "
                "wrong genes. Fine-tune with the same --genes folder that pretraining used."
            )
        logger.info(
            "fine-tuning uses the pretraining gene indices: %d genes, digest %s",
            len(space), space.digest,
        )


def _split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n)) if n >= 20 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def pretrain(
    datasets: Mapping[str, ad.AnnData],
    genespace: GeneSpace,
    *,
    config: PretrainConfig | None = None,
    work_dir: str | Path,
    counts_layer: str | None = None,
) -> PretrainedGenes:
    """Learn one embedding per gene of ``genespace`` from unperturbed raw-count cells.

    Parameters
    ----------
    datasets
        ``{name: AnnData of raw counts}``; genes are matched by name (``var_names``).
    genespace
        The gene space (from :func:`cellsmith.data.cross_dataset_hvg`).
    config
        Options (defaults when None).
    work_dir
        Folder for checkpoints and the metrics log.
    counts_layer
        Layer with raw counts (X when None).
    """
    config = config or PretrainConfig()
    if not datasets:
        raise InputError("pretraining needs at least one dataset; got none.")
    seed_everything(config.seed)
    with torch_threads(config.num_threads):
        sources = [(name, require_counts(a, layer=counts_layer), list(a.var_names)) for name, a in datasets.items()]
        cells = RemappedCells(sources, genespace, cache=config.cache)
        if len(cells) < 2:
            raise InputError(f"pretraining needs at least 2 cells; the datasets hold {len(cells)}.")
        logger.info(
            "pretraining on %d cells in %d genes (digest %s); mapped per source: %s",
            len(cells), len(genespace), genespace.digest, cells.mapped_per_source,
        )
        mean, sd = cells.gene_moments()
        module = GeneEmbeddingAE(
            len(genespace), config.n_embed, config.hidden,
            gene_mean=torch.from_numpy(mean), gene_sd=torch.from_numpy(sd),
        )
        plan = LossPlan(
            module, lambda batch: module.loss(batch["x"], batch["observed"], config.mask_fraction),
            learning_rate=config.learning_rate,
        )
        train_rows, val_rows = _split_rows(len(cells), config.val_fraction, config.seed)

        def loader(rows: np.ndarray, shuffle: bool) -> torch.utils.data.DataLoader:
            subset = torch.utils.data.Subset(cells, rows)
            return torch.utils.data.DataLoader(subset, batch_size=config.batch_size, shuffle=shuffle, collate_fn=collate_batch)

        has_val = val_rows.size > 0
        trainer = make_trainer(
            work_dir,
            max_epochs=config.max_epochs,
            monitor="val_loss" if has_val else "train_loss",
            patience=config.patience,
            progress_bar=config.progress_bar,
        )
        trainer.fit(plan, loader(train_rows, True), loader(val_rows, False) if has_val else None)
        load_best_weights(trainer, plan)
        embeddings = module.gene_embedding.detach().numpy().astype(np.float32)
        return PretrainedGenes(genespace, embeddings, config, cells.mapped_per_source)
