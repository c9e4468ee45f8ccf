"""The training core shared by every workflow (no AnnData here): config vocabulary, loss
output, base training plan, trainer factory, model base class and model-directory format, plus
small torch building blocks."""

from cellsmith.nn.config import TrainingConfig
from cellsmith.nn.encoder import GaussianEncoder, kl_standard_normal, kl_warmup_weight
from cellsmith.nn.likelihoods import log_nb, log_zinb, zero_probability
from cellsmith.nn.loss import LossOutput
from cellsmith.nn.mlp import mlp
from cellsmith.nn.plan import TrainingPlan
from cellsmith.nn.training import (
    device_of,
    load_best_weights,
    make_trainer,
    quiet_lightning,
    resolve_accelerator,
    show_progress,
    torch_threads,
)

__all__ = [
    "GaussianEncoder",
    "LossOutput",
    "TrainingConfig",
    "TrainingPlan",
    "device_of",
    "kl_standard_normal",
    "kl_warmup_weight",
    "load_best_weights",
    "log_nb",
    "log_zinb",
    "make_trainer",
    "mlp",
    "quiet_lightning",
    "resolve_accelerator",
    "show_progress",
    "torch_threads",
    "zero_probability",
]
