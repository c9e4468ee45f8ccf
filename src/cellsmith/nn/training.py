"""One way to build a Lightning trainer: early stopping, checkpoints, progress bar, seeds.

Every workflow trains through :func:`make_trainer` so that checkpoints, resumption and
logging behave the same everywhere.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger


def quiet_lightning() -> None:
    """Silence Lightning's start-up chatter (GPU/TPU availability, tips) and its worker hints."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


def make_trainer(
    out_dir: str | Path,
    *,
    max_epochs: int,
    monitor: str = "val_loss",
    mode: str = "min",
    patience: int = 10,
    progress_bar: bool = True,
    callbacks: list[Callback] | None = None,
    **trainer_kwargs,
) -> L.Trainer:
    """A CPU trainer that keeps the best and the last checkpoint under ``out_dir/checkpoints``
    and logs every metric to ``out_dir/logs/metrics.csv``.

    Parameters
    ----------
    out_dir
        Folder for checkpoints and logs.
    max_epochs
        Upper bound on epochs.
    monitor, mode, patience
        Early stopping and best-checkpoint selection (``patience <= 0`` disables early stopping).
    progress_bar
        Show a progress bar (off for tests and batch jobs).
    callbacks
        Extra callbacks.
    trainer_kwargs
        Any other :class:`lightning.Trainer` argument (e.g. ``gradient_clip_val``).
    """
    quiet_lightning()
    out_dir = Path(out_dir)
    checkpoint = ModelCheckpoint(
        dirpath=out_dir / "checkpoints", monitor=monitor, mode=mode, save_last=True, filename="best"
    )
    all_callbacks: list[Callback] = [checkpoint, *(callbacks or [])]
    if patience > 0:
        all_callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    if progress_bar:
        all_callbacks.append(TQDMProgressBar(refresh_rate=10))
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=all_callbacks,
        logger=CSVLogger(out_dir, name="logs", version=""),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        deterministic=True,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )


def load_best_weights(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Load the best checkpoint of ``trainer`` into ``module`` (early stopping keeps training a
    few epochs past the best one); return whether there was one."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        return False
    state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    return True


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (unchanged when None), then restore the setting.

    The workflows' small batches run faster on one thread than on threads that wait for each
    other when the cores are shared; each config exposes the number.
    """
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
