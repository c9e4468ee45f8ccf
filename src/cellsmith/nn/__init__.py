"""Small torch building blocks shared by the workflows (no AnnData here)."""

from cellsmith.nn.mlp import mlp
from cellsmith.nn.training import make_trainer, quiet_lightning

__all__ = ["make_trainer", "mlp", "quiet_lightning"]
