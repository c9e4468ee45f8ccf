"""Small torch building blocks shared by the workflows (no AnnData here)."""

from cellsmith.nn.mlp import mlp

__all__ = ["mlp"]
