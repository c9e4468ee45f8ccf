"""Small torch building blocks shared by the workflows (no AnnData here)."""

from cellsmith.nn.encoder import GaussianEncoder, kl_standard_normal, kl_warmup_weight
from cellsmith.nn.mlp import mlp
from cellsmith.nn.training import make_trainer, quiet_lightning

__all__ = [
    "GaussianEncoder",
    "kl_standard_normal",
    "kl_warmup_weight",
    "make_trainer",
    "mlp",
    "quiet_lightning",
]
