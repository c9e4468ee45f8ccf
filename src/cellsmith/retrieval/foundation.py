"""scGPT as a retrieval embedder, and the ``<cls>`` encoder a learned head adapts.

Pipeline, each step one function: raw counts -> masking (:func:`mask_counts`) -> gene
vocabulary mapping (:func:`map_genes`, coverage reported, alias map below 95%) ->
normalize_total 1e4 -> log1p (:meth:`ScreenCounts.log1p`) -> per-cell binning into 51 bins and
at most ``max_length - 1`` genes per cell (:mod:`cellsmith.models.scgpt.preprocess`) -> the
``<cls>`` output of :class:`~cellsmith.models.scgpt.ScGPT`, L2-normalised as scGPT's
``embed_data`` returns it.

The model is cellsmith's own pure-torch scGPT, loaded from an official checkpoint folder
(``args.json``, ``vocab.json``, ``best_model.pt``) by :func:`load_scgpt`: no ``scgpt`` package,
weights read with ``torch.load(weights_only=True)``. A head on it (:class:`CLSEncoder`) keeps
the encoder frozen, fine-tunes it (all of it or its last N layers) or trains LoRA adapters
(``peft``) in it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cellsmith._logging import logger
from cellsmith.errors import InputError, ModelDirectoryError
from cellsmith.models.scgpt import CHECKPOINT_FILES, N_BINS, ScGPT, ScGPTCheckpoint, ScGPTConfig, load_checkpoint
from cellsmith.models.scgpt.preprocess import bin_rows, choose_genes, tokenize
from cellsmith.retrieval.adaptation import add_lora, train_last_layers
from cellsmith.retrieval.embedders import Embedder, TorchBackbone
from cellsmith.retrieval.feature_rows import MappedRows, dense_rows, row_blocks
from cellsmith.retrieval.masking import RetrievalWarning, ScreenCounts

if TYPE_CHECKING:
    from cellsmith.retrieval.heads import HeadConfig

@dataclass(frozen=True)
class GeneMapping:
    """Where each input gene sits in the model vocabulary (-1: not in it) and the coverage."""

    vocab_ids: np.ndarray
    coverage_direct: float
    coverage: float
    aliased: dict[str, str] = field(default_factory=dict)

    def report(self) -> str:
        n = self.vocab_ids.size
        return (
            f"{int((self.vocab_ids >= 0).sum())}/{n} genes in the model vocabulary "
            f"({100 * self.coverage:.1f}%; {100 * self.coverage_direct:.1f}% before {len(self.aliased)} aliases)"
        )


def map_genes(
    genes: Sequence[str],
    vocab: Mapping[str, int],
    *,
    aliases: Mapping[str, str] | None = None,
    min_coverage: float = 0.95,
) -> GeneMapping:
    """Map gene names to vocabulary ids; below ``min_coverage`` apply an alias map.

    The alias map is the user's ``aliases`` (input name -> vocabulary name) plus two safe
    built-in rules: a case-insensitive match and the Ensembl id without its version suffix.
    Still below ``min_coverage`` afterwards: a warning naming examples of unmapped genes.
    """
    genes = [str(g) for g in genes]
    ids = np.array([vocab.get(g, -1) for g in genes], dtype=np.int64)
    direct = float(np.mean(ids >= 0)) if genes else 0.0
    aliased: dict[str, str] = {}
    if direct < min_coverage:
        by_upper = {name.upper(): name for name in vocab}
        for i, gene in enumerate(genes):
            if ids[i] >= 0:
                continue
            for candidate in ((aliases or {}).get(gene), by_upper.get(gene.upper()), gene.split(".")[0]):
                if candidate is not None and candidate in vocab:
                    ids[i] = vocab[candidate]
                    aliased[gene] = candidate
                    break
    mapping = GeneMapping(ids, direct, float(np.mean(ids >= 0)) if genes else 0.0, aliased)
    if mapping.coverage < min_coverage:
        missing = [g for g, i in zip(genes, ids, strict=True) if i < 0]
        warnings.warn(
            f"foundation model vocabulary covers only {mapping.report()}; unmapped genes are "
            f"dropped (e.g. {', '.join(missing[:8])}). Pass an alias map (input name -> vocabulary name).",
            RetrievalWarning,
            stacklevel=2,
        )
    return mapping


def load_scgpt(checkpoint: str | Path | None) -> ScGPTCheckpoint:
    """Load scGPT from a checkpoint directory holding args.json, vocab.json and best_model.pt.

    Raises
    ------
    InputError
        Without a checkpoint directory or with missing files; :class:`ModelDirectoryError`
        when the weights do not match the encoder of args.json (the keys are listed).
    """
    if checkpoint is None:
        raise InputError(
            "the foundation embedder needs a model checkpoint: pass --foundation-checkpoint DIR "
            f"(or foundation.checkpoint in the config), a scGPT directory holding {', '.join(CHECKPOINT_FILES)} "
            "(e.g. the whole-human checkpoint)."
        )
    return load_checkpoint(checkpoint)


class CLSEncoder(nn.Module):
    """Binned cells (B, n_mapped genes) -> the ``<cls>`` output (B, d) of an :class:`ScGPT`;
    the backbone of a head on the foundation embedder.

    :meth:`adapt` sets what trains with the head: nothing (mode ``head``), the whole encoder
    or its last ``trainable_layers`` layers (``finetune``), or LoRA adapters of rank
    ``lora_rank`` (``lora``). The spec records the adapters, so a saved head rebuilds them.
    """

    def __init__(self, model: ScGPT, gene_ids: np.ndarray, *, cls_id: int, lora_rank: int | None = None):
        super().__init__()
        self.model = model
        self.cls_id = cls_id
        self.lora_rank: int | None = None
        self.register_buffer("gene_ids", torch.as_tensor(np.asarray(gene_ids, dtype=np.int64)))
        if lora_rank is not None:
            self._add_lora(lora_rank)

    def _add_lora(self, rank: int) -> None:
        add_lora(self.model, rank)
        self.lora_rank = rank

    def adapt(self, config: HeadConfig) -> None:
        """Make the parameters of ``config.mode`` trainable and freeze the others."""
        if config.mode == "lora":
            if self.lora_rank is None:
                self._add_lora(config.lora_rank)
            return
        self.model.requires_grad_(False)
        if config.mode == "finetune":
            train_last_layers(self.model, config.trainable_layers)

    def backbone_spec(self) -> dict[str, Any]:
        """Kind ``foundation``: the encoder's shape, the number of mapped genes, the adapters."""
        return {"kind": "foundation", "model": self.model.config.to_dict(), "cls_id": self.cls_id,
                "n_genes": int(self.gene_ids.numel()), "lora_rank": self.lora_rank}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> CLSEncoder:
        """An encoder of :meth:`backbone_spec`; its gene ids and weights come with the state dict.

        Raises
        ------
        ModelDirectoryError
            For a head saved by an earlier cellsmith (its spec names a model class instead).
        """
        if "class" in spec["model"] or "cls_id" not in spec:
            raise ModelDirectoryError(
                f"this head's foundation backbone was saved by an earlier cellsmith (model class "
                f"'{spec['model'].get('class')}'), which used the scgpt package; retrain the head."
            )
        return cls(ScGPT(ScGPTConfig(**spec["model"])), np.zeros(int(spec["n_genes"]), dtype=np.int64),
                   cls_id=int(spec["cls_id"]), lora_rank=spec.get("lora_rank"))

    def forward(self, bins: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        ids, values, padding = tokenize(bins, self.gene_ids, cls_id=self.cls_id, pad_id=config.pad_id,
                                        pad_value=config.pad_value)
        return self.model.cell_embedding(ids, values, padding)  # (B, d)


class FoundationEmbedder(Embedder, TorchBackbone):
    """The L2-normalised ``<cls>`` embedding of a frozen scGPT (nothing is fitted but the gene map).

    Parameters
    ----------
    checkpoint
        A loaded checkpoint (see :func:`load_scgpt`).
    aliases
        Input gene name -> vocabulary name, used when coverage is below ``min_coverage``.
    max_length
        Tokens per cell, ``<cls>`` included (default: the checkpoint's ``max_seq_len``, 1200).
    """

    def __init__(
        self,
        name: str,
        checkpoint: ScGPTCheckpoint,
        *,
        aliases: Mapping[str, str] | None = None,
        n_bins: int = N_BINS,
        min_coverage: float = 0.95,
        batch_size: int = 64,
        max_length: int | None = None,
    ):
        super().__init__(name)
        self.checkpoint = checkpoint
        self.aliases = dict(aliases or {})
        self.n_bins = n_bins
        self.min_coverage = min_coverage
        self.batch_size = batch_size
        self.max_length = max_length or checkpoint.max_length
        self.mapping: GeneMapping | None = None
        self.seed = 0

    @property
    def vocabulary(self) -> str:
        """Vocabulary coverage of the fitted genes (empty before :meth:`fit`)."""
        return "" if self.mapping is None else self.mapping.report()

    def fit(self, train, labels, *, val, val_labels, seed):
        self.mapping = map_genes(train.genes, self.checkpoint.vocab, aliases=self.aliases,
                                 min_coverage=self.min_coverage)
        if not (self.mapping.vocab_ids >= 0).any():
            raise InputError(
                f"none of the {len(train.genes)} genes is in the foundation model vocabulary; pass an alias map."
            )
        self.seed = seed
        logger.info("%s: %s", self.name, self.vocabulary)
        return self

    @property
    def _kept(self) -> np.ndarray:
        return self.mapping.vocab_ids >= 0

    def _binned(self, block: sp.csr_matrix) -> np.ndarray:
        # Seeded per block: the random tie-breaking and gene choice repeat with the seed.
        bins = bin_rows(block[:, self._kept], self.n_bins, rng=np.random.RandomState(self.seed))
        return choose_genes(bins, self.max_length - 1, np.random.default_rng(self.seed)).astype(np.float32)

    def features(self, counts: ScreenCounts) -> MappedRows:
        """Binned log1p(CP10k) of the vocabulary genes (0: not expressed or not chosen), one
        batch of rows at a time."""
        return MappedRows(counts.log1p(), self._binned, int(self._kept.sum()))

    def _encoder(self, model: ScGPT) -> CLSEncoder:
        return CLSEncoder(model, self.mapping.vocab_ids[self._kept], cls_id=self.checkpoint.vocab["<cls>"])

    def backbone(self) -> nn.Module:
        # A copy: fine-tuning a head must not change the frozen model other runs share.
        return self._encoder(copy.deepcopy(self.checkpoint.model))

    def transform(self, counts):
        device = next(self.checkpoint.model.parameters()).device  # where the caller put the model
        encoder = self._encoder(self.checkpoint.model).to(device).eval()
        with torch.no_grad():
            blocks = [
                F.normalize(encoder(dense_rows(block).to(device)), dim=-1).cpu()
                for _, block in row_blocks(self.features(counts), self.batch_size)
            ]
        return torch.cat(blocks).numpy()
