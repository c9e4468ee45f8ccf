"""Official scGPT checkpoint folders -> :class:`~cellsmith.models.scgpt.model.ScGPT`.

A folder holds ``args.json`` (the training arguments: sizes, ``pad_value``, ``n_bins``),
``vocab.json`` (gene name -> token id) and ``best_model.pt`` (a state dict). The weights are
read with ``torch.load(weights_only=True)``: nothing in the file is executed. Keys are mapped
explicitly (:func:`map_state_dict`): the flash-attention names of checkpoints trained with
``fast_transformer`` become torch's attention names, the decoders that follow the encoder are
skipped, and any other key the encoder does not have, or lacks, refuses the checkpoint.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cellsmith.errors import InputError, ModelDirectoryError
from cellsmith.models.scgpt.model import ScGPT, ScGPTConfig

CHECKPOINT_FILES = ("args.json", "vocab.json", "best_model.pt")
#: Tokens scGPT's ``embed_data`` appends to a vocabulary that lacks them, in this order.
SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")

#: flash-attn's packed projection (``Wqkv``: q, k and v stacked in that order, as torch's
#: ``in_proj``) and flash-attn 2's ``_impl`` wrapper -> ``torch.nn.MultiheadAttention`` names.
_RENAMES = (
    (re.compile(r"\.self_attn\.(?:_impl\.)?Wqkv\.(weight|bias)$"), r".self_attn.in_proj_\1"),
    (re.compile(r"\.self_attn\._impl\.out_proj\."), ".self_attn.out_proj."),
)
#: Modules after the encoder in a full ``TransformerModel``: a cell embedding never uses them.
SKIPPED_PREFIXES = ("decoder.", "mvc_decoder.", "cls_decoder.", "grad_reverse_discriminator.")
#: Modules of checkpoints trained with batch labels, whose embeddings need those labels.
_BATCH_PREFIXES = ("batch_encoder.", "dsbn.", "bn.")


@dataclass
class ScGPTCheckpoint:
    """A loaded checkpoint: the encoder (eval mode), its vocabulary and ``args.json``."""

    model: ScGPT
    vocab: dict[str, int]
    args: dict[str, Any]
    skipped: list[str]

    @property
    def pad_value(self) -> float:
        return self.model.config.pad_value

    @property
    def max_length(self) -> int:
        """``max_seq_len`` of training (1200 in the whole-human model), ``embed_data``'s default."""
        return int(self.args.get("max_seq_len", 1200))


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


def _listed(keys: list[str], limit: int = 12) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def map_state_dict(
    state: Mapping[str, torch.Tensor], model: ScGPT, *, source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Checkpoint keys -> ``model``'s keys; returns the mapped state dict and the skipped keys.

    Raises
    ------
    ModelDirectoryError
        For keys of a batch-label model, keys the encoder lacks, keys of the encoder the
        checkpoint lacks, or tensors of another shape; the message lists them.
    """
    batch = sorted(k for k in state if k.startswith(_BATCH_PREFIXES))
    if batch:
        raise ModelDirectoryError(
            f"{source} was trained with batch labels ({_listed(batch)}); its cell embeddings need those "
            "labels, which cellsmith does not pass. Use a checkpoint trained without them (e.g. whole-human)."
        )
    mapped: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in state.items():
        if key.startswith(SKIPPED_PREFIXES):
            skipped.append(key)
            continue
        for pattern, replacement in _RENAMES:
            key = pattern.sub(replacement, key)
        mapped[key] = value
    expected = model.state_dict()
    unexpected = sorted(set(mapped) - set(expected))
    missing = sorted(set(expected) - set(mapped))
    if unexpected or missing:
        found = [f"unexpected keys: {_listed(unexpected)}"] if unexpected else []
        found += [f"missing keys: {_listed(missing)}"] if missing else []
        raise ModelDirectoryError(
            f"{source} does not match scGPT's encoder of its args.json ({'; '.join(found)}). Pass the "
            "best_model.pt saved beside that args.json and vocab.json by scGPT's TransformerModel."
        )
    wrong = [f"{k} {tuple(mapped[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if mapped[k].shape != v.shape]
    if wrong:
        raise ModelDirectoryError(
            f"{source} has tensors of other shapes than its args.json and vocab.json give: {_listed(wrong)}. "
            "Pass the three files of one checkpoint."
        )
    return mapped, sorted(skipped)


def read_vocab(path: Path) -> dict[str, int]:
    """``vocab.json`` with scGPT's special tokens appended where absent (as ``embed_data`` does).

    Raises
    ------
    ModelDirectoryError
        When the file is not {gene: id} with ids 0 .. n - 1.
    """
    vocab = json.loads(path.read_text())
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
        raise ModelDirectoryError(
            f"{path} is not a scGPT vocabulary ({{gene name: token id}} with ids 0 .. n - 1); pass the "
            "vocab.json of the checkpoint."
        )
    for token in SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    return vocab


def load_checkpoint(directory: str | Path) -> ScGPTCheckpoint:
    """Load an official scGPT checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``).

    Raises
    ------
    InputError
        When a file is missing; :class:`ModelDirectoryError` when the files do not match.
    """
    directory = Path(directory)
    missing = [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]
    if missing:
        raise InputError(
            f"foundation checkpoint {directory} lacks {', '.join(missing)}; a scGPT checkpoint "
            f"directory holds {', '.join(CHECKPOINT_FILES)}."
        )
    args = json.loads((directory / "args.json").read_text())
    vocab = read_vocab(directory / "vocab.json")
    absent = [k for k in ("embsize", "nheads", "d_hid", "nlayers") if k not in args]
    if absent:
        raise ModelDirectoryError(f"{directory / 'args.json'} lacks {', '.join(absent)}; pass scGPT's args.json.")
    config = ScGPTConfig.from_args(args, n_tokens=len(vocab), pad_id=vocab[args.get("pad_token", "<pad>")])
    model = ScGPT(config)
    source = f"checkpoint {directory / 'best_model.pt'}"
    mapped, skipped = map_state_dict(read_state_dict(directory / "best_model.pt"), model, source=source)
    model.load_state_dict(mapped)
    return ScGPTCheckpoint(model.eval(), vocab, args, skipped)
