"""One way to build a Lightning trainer: devices, precision, DDP, early stopping, checkpoints,
progress and the per-epoch metrics log.

Every workflow trains through :func:`make_trainer` so that hardware options, checkpoints,
resumption and logging behave the same everywhere.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from cellsmith._logging import logger
from cellsmith.errors import ConfigError
from cellsmith.nn.config import TrainingConfig


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter (GPU/TPU availability, tips) and its worker hints."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def resolve_accelerator(config: TrainingConfig) -> str:
    """The accelerator that will run: ``auto`` becomes ``gpu`` when CUDA is visible, ``mps`` on
    Apple silicon, else ``cpu``.

    Raises
    ------
    ConfigError
        When a GPU (or MPS) is asked for and none is visible, or 16-mixed precision on the CPU.
    """
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    accelerator = {"cuda": "gpu"}.get(config.accelerator, config.accelerator)
    if accelerator == "auto":
        accelerator = "gpu" if cuda else "mps" if mps else "cpu"
    if accelerator == "gpu" and not cuda:
        raise ConfigError(
            "accelerator 'gpu' was asked for but torch sees no CUDA device (torch "
            f"{torch.__version__}); use --accelerator cpu or auto, or install a CUDA build of torch."
        )
    if accelerator == "mps" and not mps:
        raise ConfigError("accelerator 'mps' was asked for but this machine has no MPS device; use cpu or auto.")
    if config.precision == "16-mixed" and accelerator == "cpu":
        raise ConfigError("precision 16-mixed needs a GPU; on the CPU use 32 or bf16-mixed.")
    return accelerator


def runnable_here(config: TrainingConfig) -> TrainingConfig:
    """``config`` with ``accelerator="auto"`` when its accelerator is not on this machine (a model
    trained on a GPU predicts on a CPU-only machine), else ``config`` itself."""
    try:
        resolve_accelerator(config)
    except ConfigError as err:
        logger.warning("%s Running on accelerator 'auto' instead.", err)
        return config.model_copy(update={"accelerator": "auto", "precision": "32", "devices": 1})
    return config


def device_of(config: TrainingConfig) -> torch.device:
    """The torch device prediction runs on (the first device of the accelerator)."""
    return torch.device({"gpu": "cuda", "mps": "mps"}.get(resolve_accelerator(config), "cpu"))


def show_progress(config: TrainingConfig) -> bool:
    """A progress bar only when asked for and stderr is a terminal (CI logs stay quiet)."""
    return bool(config.progress_bar) and sys.stderr.isatty()


def make_trainer(
    out_dir: str | Path,
    config: TrainingConfig,
    *,
    monitor: str = "val_loss",
    mode: str = "min",
    callbacks: Sequence[Callback] = (),
    **trainer_kwargs,
) -> L.Trainer:
    """A trainer on the config's accelerator, devices, precision and strategy that keeps the best
    and the last checkpoint under ``out_dir/checkpoints`` and logs every metric to
    ``out_dir/logs/metrics.csv``.

    Parameters
    ----------
    out_dir
        Folder for checkpoints and logs.
    config
        ``max_epochs``, ``max_steps``, ``patience`` (0: no early stopping), hardware and
        ``progress_bar``.
    monitor, mode
        Early stopping and best-checkpoint selection.
    callbacks
        Extra callbacks.
    trainer_kwargs
        Any other :class:`lightning.Trainer` argument (e.g. ``gradient_clip_val``).
    """
    quiet_lightning()
    out_dir = Path(out_dir)
    accelerator = resolve_accelerator(config)
    checkpoint = ModelCheckpoint(
        dirpath=out_dir / "checkpoints", monitor=monitor, mode=mode, save_last=True, filename="best"
    )
    all_callbacks: list[Callback] = [checkpoint, *callbacks]
    if config.patience > 0:
        # Checked after validation only, and not strict: a run that --max-steps ends before its
        # first validation simply has nothing to stop on.
        all_callbacks.append(
            EarlyStopping(
                monitor=monitor, mode=mode, patience=config.patience, check_on_train_epoch_end=False, strict=False
            )
        )
    progress = show_progress(config)
    if progress:
        all_callbacks.append(RichProgressBar(leave=True))
    strategy = config.strategy
    several = config.devices == "auto" or config.devices > 1
    if strategy == "auto" and several and accelerator == "cpu":
        strategy = "ddp"  # Lightning would pick ddp too; CPU processes talk through gloo
    kwargs = {"log_every_n_steps": 1, **trainer_kwargs}
    return L.Trainer(
        accelerator=accelerator,
        devices=config.devices,
        strategy=strategy,
        precision=config.precision,
        max_epochs=config.max_epochs,
        max_steps=config.max_steps,
        callbacks=all_callbacks,
        logger=CSVLogger(out_dir, name="logs", version=""),
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic=accelerator == "cpu",
        num_sanity_val_steps=0,
        **kwargs,
    )


def load_best_weights(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Load the best checkpoint of ``trainer`` into ``module`` (early stopping keeps training a
    few epochs past the best one); return whether there was one.

    The checkpoint is read with ``weights_only=True``: only tensors and plain containers.
    """
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        return False
    state = torch.load(best, map_location=module.device, weights_only=True)["state_dict"]
    module.load_state_dict(state)
    return True


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (unchanged when None), then restore the setting."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
