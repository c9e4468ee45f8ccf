"""Small torch building blocks shared by the workflows (no AnnData here)."""

from cellsmith.nn.encoder import GaussianEncoder, kl_standard_normal, kl_warmup_weight
from cellsmith.nn.likelihoods import log_nb, log_zinb, zero_probability
from cellsmith.nn.mlp import mlp
from cellsmith.nn.training import load_best_weights, make_trainer, quiet_lightning, torch_threads

__all__ = [
    "GaussianEncoder",
    "kl_standard_normal",
    "kl_warmup_weight",
    "log_nb",
    "log_zinb",
    "load_best_weights",
    "make_trainer",
    "mlp",
    "quiet_lightning",
    "torch_threads",
    "zero_probability",
]
