"""Configuration of the conditional scVI model (saved as YAML with every model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cellsmith.nn.config import TrainingConfig


class SCVIConfig(TrainingConfig):
    """Architecture, likelihood and training options of :class:`~cellsmith.scvi.ConditionalSCVI`.

    The shared training options (``learning_rate``, ``batch_size``, ``seed``, ``accelerator``,
    ``devices``, ``precision`` ...) are those of :class:`~cellsmith.nn.TrainingConfig`; the
    defaults below follow scvi-tools' SCVI (latent 10, one hidden layer of 128, dropout 0.1,
    Adam with learning rate 1e-3, batch size 128) except for the likelihood default ``zinb`` and
    the always-zero gene penalty. The key ``lr`` of cellsmith 0.1 still loads, with a warning.
    """

    n_latent: int = Field(10, ge=1, description="Latent dimensions.")
    n_hidden: int = Field(128, ge=1, description="Width of every hidden layer.")
    n_layers: int = Field(1, ge=1, description="Hidden layers of the encoder and of the decoder.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout of the encoder's hidden layers.")
    likelihood: Literal["zinb", "nb"] = Field("zinb", description="Count likelihood of the decoder.")
    encode_covariates: bool = Field(
        True,
        description="Give the encoder the batch and covariate one-hots (the perturbation is never "
        "encoded: the decoder alone carries it, so a control cell's latent state can be decoded "
        "under any perturbation).",
    )
    zero_penalty: bool = Field(True, description="Penalise predicted means of always-zero genes.")
    zero_gene_init: bool = Field(
        True,
        description="Start the decoder's output bias of always-zero genes at -10 (predicted share of "
        "the library ~e^-10 times that of a typical gene). Adam moves every gene-specific weight by "
        "about lr per step whatever the gradient's size, so a loss term alone lowers these means "
        "only slowly; the penalty then keeps them there.",
    )
    kl_warmup_epochs: int = Field(
        50, ge=0, description="Epochs over which the KL weight grows linearly from 0 to 1."
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Seeded held-out validation share.")

    # The shared training options, with scVI's defaults.
    learning_rate: float = Field(1e-3, gt=0.0, description="Adam learning rate.")
    weight_decay: float = Field(1e-6, ge=0.0, description="Adam weight decay.")
    batch_size: int = Field(128, ge=2, description="Training mini-batch size (cells).")
    max_epochs: int = Field(200, ge=1, description="Upper bound on training epochs.")
    patience: int = Field(
        20, ge=0, description="Early-stopping patience in epochs of validation loss; 0 switches it off."
    )
    num_threads: int | None = Field(
        None,
        ge=1,
        description="torch threads while training and predicting (restored afterwards); None keeps "
        "torch's setting. On an idle 2-core machine torch's 2 threads train 1.7x faster than 1; on "
        "an oversubscribed machine 1 thread avoids threads waiting on each other.",
    )
