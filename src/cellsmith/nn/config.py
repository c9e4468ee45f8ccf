"""The training vocabulary every workflow config shares (one name per option, one meaning).

Workflow configs (:class:`~cellsmith.scvi.SCVIConfig`, :class:`~cellsmith.deconvolution.DeconvolutionConfig`,
the perturbation and retrieval-head configs) extend :class:`TrainingConfig` and override its
defaults; the names below mean the same thing everywhere. Keys of cellsmith 0.1 (``lr``,
``torch_threads``, ``threads``, a negative ``patience``) still load, with a
:class:`~cellsmith.errors.CellsmithDeprecationWarning`.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from cellsmith.config import CellsmithConfig
from cellsmith.errors import CellsmithDeprecationWarning

Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
Precision = Literal["32", "bf16-mixed", "16-mixed"]


class TrainingConfig(CellsmithConfig):
    """Options of the shared training core (:func:`cellsmith.nn.make_trainer`)."""

    #: Old key -> new key; old keys load with a deprecation warning.
    renamed_keys: ClassVar[dict[str, str]] = {
        "lr": "learning_rate",
        "torch_threads": "num_threads",
        "threads": "num_threads",
    }

    max_epochs: int = Field(100, ge=1, description="Upper bound on training epochs.")
    max_steps: int = Field(-1, ge=-1, description="Upper bound on optimiser steps (-1: no limit).")
    learning_rate: float = Field(1e-3, gt=0.0, description="Optimiser learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Optimiser weight decay.")
    batch_size: int = Field(128, ge=1, description="Training mini-batch size.")
    patience: int = Field(
        10, ge=0, description="Early-stopping patience in validation epochs; 0 switches early stopping off."
    )
    seed: int = Field(0, description="Seeds every random step (splits, initialisation, batches).")
    accelerator: Accelerator = Field(
        "auto", description="auto (a GPU when one is visible, else the CPU), cpu, gpu (cuda) or mps."
    )
    devices: int | Literal["auto"] = Field(
        1, description="Devices to train on; more than 1 trains with DDP (Lightning). 'auto': all visible."
    )
    precision: Precision = Field("32", description="32, bf16-mixed or 16-mixed (16-mixed needs a GPU).")
    strategy: str = Field("auto", description="Lightning strategy ('auto' picks DDP for several devices).")
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads while training and predicting (None: torch's setting)."
    )
    progress_bar: bool = Field(True, description="Show a progress bar when writing to a terminal.")

    @model_validator(mode="before")
    @classmethod
    def _rename_old_keys(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        for old, new in cls.renamed_keys.items():
            if old in values and old not in cls.model_fields:
                warnings.warn(
                    f"config key '{old}' is deprecated; write '{new}' instead (it will be refused "
                    "in a later release).",
                    CellsmithDeprecationWarning,
                    stacklevel=2,
                )
                value = values.pop(old)
                values.setdefault(new, value)
        patience = values.get("patience")
        if isinstance(patience, int) and patience < 0:
            warnings.warn(
                f"patience {patience}: a negative patience is deprecated; 0 switches early stopping off.",
                CellsmithDeprecationWarning,
                stacklevel=2,
            )
            values["patience"] = 0
        return values

    @field_validator("devices", mode="before")
    @classmethod
    def _devices_from_text(cls, value: Any) -> Any:
        # The CLI passes "2" or "auto" as text.
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_from_number(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("devices")
    @classmethod
    def _positive_devices(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("devices must be at least 1 or 'auto'")
        return value
