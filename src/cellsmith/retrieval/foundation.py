"""Adapter for a transformer foundation model (scGPT-style) as a retrieval embedder.

Pipeline, each step one function: raw counts -> masking (:func:`mask_counts`) ->
normalize_total 1e4 -> log1p (:meth:`ScreenCounts.log1p`) -> per-cell value binning
(:func:`bin_values`, 51 bins, bin 0 reserved for zeros) -> gene vocabulary mapping
(:func:`map_genes`, coverage reported, alias map below 95%) -> the ``<cls>`` embedding.

The model is anything implementing :class:`FoundationModel`: the real scGPT loaded from a
checkpoint directory (:func:`load_scgpt`, needs the ``scgpt`` package) or, in tests, the tiny
randomly initialised :class:`TinyFoundationModel` with the same interface. Checkpoints are read
as state dicts with ``torch.load(..., weights_only=True)``: a file that would need unpickling
arbitrary objects is refused, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import pickle
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from cellsmith.errors import InputError, ModelDirectoryError
from cellsmith.retrieval.embedders import Embedder, TorchBackbone
from cellsmith.retrieval.feature_rows import MappedRows, dense_rows, row_blocks
from cellsmith.retrieval.masking import RetrievalWarning, ScreenCounts

#: scGPT's whole-human checkpoints use 51 value bins; bin 0 means "not expressed".
N_BINS = 51
SCGPT_FILES = ("args.json", "vocab.json", "best_model.pt")


def bin_values(x: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Per-cell quantile binning: zeros -> bin 0, non-zeros -> bins 1 .. n_bins - 1.

    The non-zero values of each row are cut at ``n_bins - 1`` quantiles of that row
    (``np.quantile(nz, linspace(0, 1, n_bins - 1))``) and digitised, so the row's smallest
    non-zero value gets bin 1 and its largest bin ``n_bins - 1``.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape, dtype=np.int64)
    levels = np.linspace(0.0, 1.0, n_bins - 1)
    for i, row in enumerate(x):
        nonzero = row > 0
        if nonzero.any():
            edges = np.quantile(row[nonzero], levels)
            out[i, nonzero] = np.digitize(row[nonzero], edges)
    return out


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
        missing = [g for g, i in zip(genes, ids) if i < 0]
        warnings.warn(
            f"foundation model vocabulary covers only {mapping.report()}; unmapped genes are "
            f"dropped (e.g. {', '.join(missing[:8])}). Pass an alias map (input name -> vocabulary name).",
            RetrievalWarning,
            stacklevel=2,
        )
    return mapping


class FoundationModel(nn.Module, ABC):
    """The interface of a foundation transformer: token ids and values in, one vector per token out."""

    vocab: Mapping[str, int]
    pad_value: float
    embedding_dim: int

    @property
    def cls_id(self) -> int:
        return self.vocab["<cls>"]

    @abstractmethod
    def encode(self, gene_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``gene_ids`` (B, L) long, ``values`` (B, L) float (bins) -> (B, L, embedding_dim)."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The architecture as JSON (``class`` and its arguments; no weights), rebuilt by
        :func:`build_foundation_model`."""


class TinyFoundationModel(FoundationModel):
    """A small randomly initialised transformer with the interface of :class:`FoundationModel`
    (gene embedding + continuous value encoder, as scGPT); for tests and smoke runs only."""

    def __init__(self, vocab: Mapping[str, int], *, d_model: int = 32, n_heads: int = 2, n_layers: int = 2, pad_value: float = -2.0):
        super().__init__()
        self.vocab = dict(vocab)
        self.pad_value = pad_value
        self.embedding_dim = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.genes = nn.Embedding(max(self.vocab.values()) + 1, d_model)
        self.values = nn.Sequential(nn.Linear(1, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def encode(self, gene_ids, values):
        tokens = self.genes(gene_ids) + self.values(values.unsqueeze(-1))  # (B, L, d)
        return self.transformer(tokens)

    def spec(self):
        return {"class": "tiny", "vocab": self.vocab, "d_model": self.embedding_dim, "n_heads": self.n_heads,
                "n_layers": self.n_layers, "pad_value": self.pad_value}


class _ScGPTModel(FoundationModel):
    """The real scGPT ``TransformerModel`` behind the :class:`FoundationModel` interface."""

    def __init__(self, model: nn.Module, vocab: Mapping[str, int], args: Mapping[str, Any]):
        super().__init__()
        self.model = model
        self.vocab = dict(vocab)
        self.args = dict(args)
        self.pad_value = float(args.get("pad_value", -2))
        self.embedding_dim = int(args["embsize"])

    def encode(self, gene_ids, values):
        padding = gene_ids.eq(self.vocab["<pad>"])
        return self.model._encode(gene_ids, values, src_key_padding_mask=padding)

    def spec(self):
        return {"class": "scgpt", "args": self.args, "vocab": self.vocab}


def _build_scgpt(args: Mapping[str, Any], vocab: Mapping[str, int], *, source: str) -> _ScGPTModel:
    """scGPT's ``TransformerModel`` of ``args.json`` and ``vocab.json`` (weights not loaded).

    Raises
    ------
    InputError
        When the ``scgpt`` package is not installed (``source`` names what needed it).
    """
    if importlib.util.find_spec("scgpt") is None:
        raise InputError(
            f"loading the scGPT model of {source} needs the scgpt package, which is not "
            "installed; install it (pip install scgpt) or use the pca / logreg embedders."
        )
    from scgpt.model import TransformerModel

    vocab = dict(vocab)
    for token in ("<pad>", "<cls>", "<eoc>"):
        vocab.setdefault(token, max(vocab.values()) + 1)
    model = TransformerModel(
        ntoken=max(vocab.values()) + 1, d_model=args["embsize"], nhead=args["nheads"], d_hid=args["d_hid"],
        nlayers=args["nlayers"], nlayers_cls=args.get("n_layers_cls", 3), n_cls=1, vocab=vocab,
        dropout=args.get("dropout", 0.2), pad_token="<pad>", pad_value=args.get("pad_value", -2),
        do_mvc=True, do_dab=False, use_batch_labels=False, domain_spec_batchnorm=False,
        explicit_zero_prob=False, use_fast_transformer=False, pre_norm=False,
    )
    return _ScGPTModel(model, vocab, args)


def build_foundation_model(spec: Mapping[str, Any]) -> FoundationModel:
    """A freshly initialised foundation model of :meth:`FoundationModel.spec` (load weights into it).

    Raises
    ------
    ModelDirectoryError
        For a spec of an unknown model class.
    """
    kind = spec.get("class")
    if kind == "tiny":
        return TinyFoundationModel(spec["vocab"], d_model=spec["d_model"], n_heads=spec["n_heads"],
                                   n_layers=spec["n_layers"], pad_value=spec["pad_value"])
    if kind == "scgpt":
        return _build_scgpt(spec["args"], spec["vocab"], source="a saved retrieval head")
    raise ModelDirectoryError(
        f"setup.json names a foundation model of class '{kind}'; this cellsmith rebuilds tiny and scgpt. "
        "Upgrade cellsmith or retrain the head."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in checkpoint ``path``, read with ``weights_only=True`` (tensors and plain
    containers only: nothing in the file is executed).

    Raises
    ------
    InputError
        When the file holds other objects (a pickled model, an arbitrary pickle) or is not a
        torch file; it is refused without being unpickled.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise InputError(
            f"foundation checkpoint {path} cannot be read as a state dict of tensors ({reason}); it was "
            "refused without running anything it holds. Pass a checkpoint saved as "
            "torch.save(model.state_dict(), path)."
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"foundation checkpoint {path} holds a {type(state).__name__}, not a state dict of tensors; "
            "pass a checkpoint saved as torch.save(model.state_dict(), path)."
        )
    return dict(state)


def load_scgpt(checkpoint: str | Path | None) -> FoundationModel:
    """Load scGPT from a checkpoint directory holding args.json, vocab.json and best_model.pt.

    Raises
    ------
    InputError
        Without a checkpoint directory, with missing files, or when the ``scgpt`` package is
        not installed; the message says what to provide.
    """
    if checkpoint is None:
        raise InputError(
            "the foundation embedder needs a model checkpoint: pass --foundation-checkpoint DIR "
            f"(or foundation.checkpoint in the config), a scGPT directory holding {', '.join(SCGPT_FILES)} "
            "(e.g. the whole-human checkpoint), and install the scgpt package."
        )
    checkpoint = Path(checkpoint)
    missing = [name for name in SCGPT_FILES if not (checkpoint / name).is_file()]
    if missing:
        raise InputError(
            f"foundation checkpoint {checkpoint} lacks {', '.join(missing)}; a scGPT checkpoint "
            f"directory holds {', '.join(SCGPT_FILES)}."
        )
    args = json.loads((checkpoint / "args.json").read_text())
    vocab = json.loads((checkpoint / "vocab.json").read_text())
    wrapped = _build_scgpt(args, vocab, source=f"checkpoint {checkpoint}")
    from scgpt.utils import load_pretrained

    load_pretrained(wrapped.model, read_state_dict(checkpoint / "best_model.pt"), verbose=False)
    return wrapped.eval()


class CLSEncoder(nn.Module):
    """bins (B, n_mapped) -> the ``<cls>`` embedding (B, d) of a :class:`FoundationModel`; the
    backbone of a head on the foundation embedder."""

    def __init__(self, model: FoundationModel, gene_ids: np.ndarray):
        super().__init__()
        self.model = model
        ids = np.concatenate([[model.cls_id], np.asarray(gene_ids, dtype=np.int64)])
        self.register_buffer("gene_ids", torch.as_tensor(ids, dtype=torch.long))

    def backbone_spec(self) -> dict[str, Any]:
        """Kind ``foundation``: the model's architecture and the number of mapped genes."""
        return {"kind": "foundation", "model": self.model.spec(), "n_genes": int(self.gene_ids.numel() - 1)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> CLSEncoder:
        """An encoder of :meth:`backbone_spec`; its gene ids and weights come with the state dict."""
        return cls(build_foundation_model(spec["model"]), np.zeros(int(spec["n_genes"]), dtype=np.int64))

    def forward(self, bins: torch.Tensor) -> torch.Tensor:
        n = bins.shape[0]
        values = torch.cat([torch.full((n, 1), self.model.pad_value), bins.float()], dim=1)  # (B, 1 + G)
        return self.model.encode(self.gene_ids.expand(n, -1), values)[:, 0, :]


class FoundationEmbedder(Embedder, TorchBackbone):
    """The ``<cls>`` embedding of a frozen foundation model (nothing is fitted but the gene map).

    Parameters
    ----------
    model
        A loaded :class:`FoundationModel` (see :func:`load_scgpt`).
    aliases
        Input gene name -> vocabulary name, used when coverage is below ``min_coverage``.
    """

    def __init__(
        self,
        name: str,
        model: FoundationModel,
        *,
        aliases: Mapping[str, str] | None = None,
        n_bins: int = N_BINS,
        min_coverage: float = 0.95,
        batch_size: int = 64,
    ):
        super().__init__(name)
        self.model = model
        self.aliases = dict(aliases or {})
        self.n_bins = n_bins
        self.min_coverage = min_coverage
        self.batch_size = batch_size
        self.mapping: GeneMapping | None = None

    def fit(self, train, labels, *, val, val_labels, seed):
        self.mapping = map_genes(train.genes, self.model.vocab, aliases=self.aliases, min_coverage=self.min_coverage)
        if not (self.mapping.vocab_ids >= 0).any():
            raise InputError(f"none of the {len(train.genes)} genes is in the foundation model vocabulary; pass an alias map.")
        return self

    def features(self, counts: ScreenCounts) -> MappedRows:
        """Binned log1p(CP10k) of the vocabulary genes, computed (dense) one batch of rows at a time."""
        kept = self.mapping.vocab_ids >= 0

        def binned(block: sp.csr_matrix) -> np.ndarray:
            return bin_values(block[:, kept].toarray(), self.n_bins).astype(np.float32)

        return MappedRows(counts.log1p(), binned, int(kept.sum()))

    def backbone(self) -> nn.Module:
        # A copy: fine-tuning a head must not change the frozen model other runs share.
        return CLSEncoder(copy.deepcopy(self.model), self.mapping.vocab_ids[self.mapping.vocab_ids >= 0])

    def transform(self, counts):
        encoder = CLSEncoder(self.model, self.mapping.vocab_ids[self.mapping.vocab_ids >= 0]).eval()
        with torch.no_grad():
            return torch.cat([encoder(dense_rows(block)) for _, block in row_blocks(self.features(counts), self.batch_size)]).numpy()
