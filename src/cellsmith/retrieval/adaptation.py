"""How much of a foundation encoder trains with a retrieval head.

- :func:`train_last_layers`: unfreeze the last N transformer layers (all of the encoder when N
  is None), the rest stays frozen;
- :func:`add_lora`: LoRA adapters (``peft``) on the attention (q, k, v and output projections,
  peft's ``MultiheadAttention`` layer) and both feed-forward maps of every transformer layer;
  only the adapters train.
"""

from __future__ import annotations

from torch import nn

from cellsmith.errors import InputError

#: Modules LoRA adapts: attention and feed-forward maps of the transformer layers only (the
#: value encoder's linear1 / linear2 share the names, hence the full path).
LORA_TARGETS = r".*transformer_encoder\.layers\.\d+\.(self_attn|linear1|linear2)"


def _layers(model: nn.Module) -> nn.ModuleList:
    return model.transformer_encoder.layers


def train_last_layers(model: nn.Module, n_layers: int | None) -> None:
    """Make the last ``n_layers`` transformer layers trainable (the whole model when None).

    Raises
    ------
    InputError
        When the model has fewer layers.
    """
    if n_layers is None:
        model.requires_grad_(True)
        return
    layers = _layers(model)
    if n_layers > len(layers):
        raise InputError(
            f"trainable_layers {n_layers}: the foundation model has {len(layers)} transformer layers; pass at most "
            f"{len(layers)} (or leave it unset to fine-tune all of it)."
        )
    model.requires_grad_(False)
    for layer in layers[len(layers) - n_layers:]:
        layer.requires_grad_(True)


def add_lora(model: nn.Module, rank: int) -> None:
    """Insert LoRA adapters of ``rank`` (alpha = 2 x rank) in ``model``'s transformer layers, in
    place; every other parameter is frozen. The adapted model's state dict holds the base
    weights under ``*.base_layer.*`` and the adapters under ``*.lora_A.*`` / ``*.lora_B.*``."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
    inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
