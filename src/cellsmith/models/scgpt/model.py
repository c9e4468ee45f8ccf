"""The encoder of scGPT's ``TransformerModel`` in plain torch, with the same parameter names.

Parameter names (and so state-dict keys) follow scGPT 0.2.4's ``scgpt.model.TransformerModel``:
``encoder.embedding`` / ``encoder.enc_norm`` (gene tokens), ``value_encoder.*`` (expression
values), ``transformer_encoder.layers.{i}.*`` (the parameters of ``torch.nn.TransformerEncoderLayer``,
post-norm, ReLU, batch first). The decoders that follow the encoder (expression, MVC, classification)
are not part of a cell embedding and are not built; :mod:`.checkpoint` skips their weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

ValueStyle = Literal["continuous", "category", "scaling"]


@dataclass(frozen=True)
class ScGPTConfig:
    """Shape of an scGPT encoder, read from a checkpoint's ``args.json`` (:meth:`from_args`).

    Attributes
    ----------
    n_tokens
        Vocabulary size including ``<pad>``, ``<cls>``, ``<eoc>``.
    d_model, n_heads, d_hid, n_layers
        ``embsize``, ``nheads``, ``d_hid``, ``nlayers`` of ``args.json``.
    pad_id
        Token id of ``<pad>`` (the gene embedding's padding index).
    pad_value
        Expression value of ``<cls>`` and padding positions (``pad_value``, -2 in the
        whole-human checkpoints).
    value_style
        ``input_emb_style``: binned values through a small MLP (``continuous``, the published
        checkpoints), an embedding per bin (``category``) or a scale factor (``scaling``).
    n_bins
        Number of value bins (``n_bins``), the category embedding's size.
    pre_norm
        ``pre_norm`` of scGPT (False in the published checkpoints).
    """

    n_tokens: int
    d_model: int = 512
    n_heads: int = 8
    d_hid: int = 512
    n_layers: int = 12
    dropout: float = 0.2
    pad_id: int = 0
    pad_value: float = -2.0
    value_style: ValueStyle = "continuous"
    n_bins: int = 51
    pre_norm: bool = False

    @classmethod
    def from_args(cls, args: Mapping[str, Any], *, n_tokens: int, pad_id: int) -> ScGPTConfig:
        """The config of an ``args.json`` (scGPT's key names, with its defaults where absent)."""
        return cls(
            n_tokens=n_tokens, d_model=int(args["embsize"]), n_heads=int(args["nheads"]), d_hid=int(args["d_hid"]),
            n_layers=int(args["nlayers"]), dropout=float(args.get("dropout", 0.2)), pad_id=pad_id,
            pad_value=float(args.get("pad_value", -2)), value_style=args.get("input_emb_style", "continuous"),
            n_bins=int(args.get("n_bins", 51)), pre_norm=bool(args.get("pre_norm", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GeneEncoder(nn.Module):
    """Token id -> layer-normalised embedding (scGPT's ``GeneEncoder``)."""

    def __init__(self, n_tokens: int, d_model: int, pad_id: int):
        super().__init__()
        self.embedding = nn.Embedding(n_tokens, d_model, padding_idx=pad_id)
        self.enc_norm = nn.LayerNorm(d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.enc_norm(self.embedding(ids))  # (B, L, d)


class ContinuousValueEncoder(nn.Module):
    """Value (a bin index as a float) -> Linear(1, d) -> ReLU -> Linear(d, d) -> LayerNorm.

    Values are clipped at ``max_value`` (512 in scGPT) first.
    """

    def __init__(self, d_model: int, dropout: float, max_value: float = 512.0):
        super().__init__()
        self.linear1 = nn.Linear(1, d_model)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.max_value = max_value

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(values.unsqueeze(-1), max=self.max_value)  # (B, L, 1)
        return self.dropout(self.norm(self.linear2(self.activation(self.linear1(x)))))


class CategoryValueEncoder(GeneEncoder):
    """Bin index -> layer-normalised embedding (``input_emb_style: category``): the gene
    encoder's layout (same parameter names in the checkpoint) over bins, padding at ``pad_value``."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return super().forward(values.long())


class EncoderLayer(nn.Module):
    """``torch.nn.TransformerEncoderLayer`` (ReLU, batch first) with the same parameter names,
    written out: its fused inference path reads ``linear1`` / ``linear2`` weights directly and
    would bypass adapters (LoRA) wrapped around them."""

    def __init__(self, d_model: int, n_heads: int, d_hid: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, d_hid)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_hid, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def _attention(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        out = self.self_attn(x, x, x, key_padding_mask=padding_mask, need_weights=False)[0]
        return self.dropout1(out)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(torch.relu(self.linear1(x)))))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self._attention(self.norm1(x), padding_mask)
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self._attention(x, padding_mask))
        return self.norm2(x + self._feed_forward(x))


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` (``layers.{i}``, as ``torch.nn.TransformerEncoder``)."""

    def __init__(self, config: ScGPTConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(config.d_model, config.n_heads, config.d_hid, config.dropout, config.pre_norm)
            for _ in range(config.n_layers)
        )

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, padding_mask)
        return x


def _value_encoder(config: ScGPTConfig) -> nn.Module:
    if config.value_style == "continuous":
        return ContinuousValueEncoder(config.d_model, config.dropout)
    if config.value_style == "category":
        return CategoryValueEncoder(config.n_bins, config.d_model, int(config.pad_value))
    return nn.Identity()


class ScGPT(nn.Module):
    """scGPT's encoder: gene tokens + expression values -> one vector per token.

    ``forward(gene_ids, values)`` returns (B, L, d_model); :meth:`cell_embedding` the output
    at position 0, where the ``<cls>`` token sits (scGPT's ``cell_emb_style="cls"``).
    """

    def __init__(self, config: ScGPTConfig):
        super().__init__()
        self.config = config
        self.encoder = GeneEncoder(config.n_tokens, config.d_model, config.pad_id)
        self.value_encoder = _value_encoder(config)
        self.transformer_encoder = TransformerEncoder(config)

    def forward(
        self, gene_ids: torch.Tensor, values: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``gene_ids`` (B, L) long, ``values`` (B, L) float; ``padding_mask`` (B, L) bool, True
        at padding (default: where ``gene_ids`` is ``<pad>``) -> (B, L, d_model)."""
        if padding_mask is None:
            padding_mask = gene_ids.eq(self.config.pad_id)
        genes = self.encoder(gene_ids)  # (B, L, d)
        if self.config.value_style == "scaling":
            tokens = genes * values.unsqueeze(-1)
        else:
            tokens = genes + self.value_encoder(values)
        return self.transformer_encoder(tokens, padding_mask)

    def cell_embedding(
        self, gene_ids: torch.Tensor, values: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The ``<cls>`` output (B, d_model), not normalised (``embed_data`` L2-normalises it)."""
        return self(gene_ids, values, padding_mask)[:, 0, :]
