"""The model API every workflow follows: ``Model(config)``, ``.train(adata, ...) -> self``,
``.predict(...)``, ``.save(dir)``, ``Model.load(dir)``.

:class:`CellsmithModel` holds what is the same everywhere: the config (seed included), the gene
space, the torch module, the training history, the atomic model directory of
:mod:`cellsmith.nn.saving`, fitting a training plan through :func:`~cellsmith.nn.make_trainer`,
and the device prediction runs on. A workflow model supplies the data contract: how to train,
how to predict, what its setup is and how to rebuild its module.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import lightning as L
import pandas as pd
import torch
from torch import nn

from cellsmith.data.genespace import GeneSpace
from cellsmith.errors import CellsmithDeprecationWarning, InputError
from cellsmith.nn.config import TrainingConfig
from cellsmith.nn.saving import ModelFiles, read_model_dir, write_model_dir
from cellsmith.nn.training import device_of, load_best_weights, make_trainer, runnable_here, torch_threads

HISTORY = "history.csv"


class CellsmithModel(ABC):
    """Base of every trainable cellsmith model.

    Subclasses set :attr:`workflow`, :attr:`config_class` and :attr:`command`, and implement
    :meth:`train`, :meth:`predict`, :meth:`setup_dict` and :meth:`restore`.

    Parameters
    ----------
    config
        Options (the workflow's defaults when None); ``config.seed`` seeds every random step.
    """

    #: Name written into the manifest; a folder of another workflow is refused on load.
    workflow: ClassVar[str]
    #: The workflow's config class.
    config_class: ClassVar[type[TrainingConfig]]
    #: The command that writes this model's folders (named in error messages).
    command: ClassVar[str]

    def __init__(self, config: TrainingConfig | None = None):
        self.config = config if config is not None else self.config_class()
        self.module: nn.Module | None = None
        self.genespace: GeneSpace | None = None
        self.history: pd.DataFrame | None = None
        #: False in the extra processes of a multi-device run, which must not write outputs.
        self.is_global_zero = True

    # ----------------------------------------------------------------- what workflows supply
    @abstractmethod
    def train(self, *args: Any, **kwargs: Any) -> Self:
        """Fit on data; returns ``self``."""

    @abstractmethod
    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """The workflow's prediction."""

    @abstractmethod
    def setup_dict(self) -> dict[str, Any]:
        """The workflow's data setup (JSON-serialisable), saved as ``setup.json``."""

    @abstractmethod
    def restore(self, files: ModelFiles) -> None:
        """Rebuild the module from a read model folder and load its weights."""

    def extra_files(self) -> dict[str, Callable[[Path], None]]:
        """Workflow files written beside the model (``{name: writer}``); history by default."""
        if self.history is None:
            return {}
        return {HISTORY: lambda p: self.history.to_csv(p, index=False)}

    @classmethod
    def read_legacy(cls, path: Path) -> ModelFiles:
        """Read a cellsmith 0.1 folder (no manifest); refused unless a workflow overrides this."""
        raise InputError(
            f"{path} has no cellsmith_model.json: it is not a cellsmith model folder, or one written "
            f"by cellsmith 0.1 that this workflow cannot convert. Retrain with `{cls.command}`."
        )

    # ----------------------------------------------------------------- shared behaviour
    @property
    def device(self) -> torch.device:
        """The device prediction runs on (from ``config.accelerator``)."""
        return device_of(self.config)

    def require_trained(self) -> None:
        if self.module is None:
            raise InputError(
                f"the {type(self).__name__} is not trained; call train() or {type(self).__name__}.load() first."
            )

    def fit_plan(
        self,
        plan: L.LightningModule,
        train: Any,
        val: Any | None,
        *,
        out_dir: str | Path | None = None,
        monitor: str = "val_loss",
        mode: str = "min",
        resume: bool = False,
        callbacks: Sequence[L.Callback] = (),
        **trainer_kwargs: Any,
    ) -> L.Trainer:
        """Train ``plan`` with the shared trainer; keep the weights of the best validation epoch
        (also when early stopping is off, ``patience: 0``).

        Parameters
        ----------
        train, val
            Data loaders (``val`` None: ``monitor`` must be a training metric).
        out_dir
            Folder of ``checkpoints/`` and ``logs/metrics.csv`` (a temporary folder when None).
        resume
            Continue from ``out_dir/checkpoints/last.ckpt``.
        """
        if resume and (out_dir is None or not (Path(out_dir) / "checkpoints" / "last.ckpt").is_file()):
            raise InputError(f"cannot resume: no checkpoints/last.ckpt under {out_dir}; train without --resume.")
        with tempfile.TemporaryDirectory(prefix="cellsmith_train_") as scratch:
            run_dir = Path(out_dir) if out_dir is not None else Path(scratch)
            trainer = make_trainer(
                run_dir, self.config, monitor=monitor, mode=mode, callbacks=callbacks, **trainer_kwargs
            )
            earlier = read_history(run_dir / "logs" / "metrics.csv") if resume else None
            ckpt = run_dir / "checkpoints" / "last.ckpt" if resume else None
            with torch_threads(self.config.num_threads):
                trainer.fit(plan, train_dataloaders=train, val_dataloaders=val, ckpt_path=ckpt)
            self.history = merge_history(earlier, read_history(run_dir / "logs" / "metrics.csv"))
            load_best_weights(trainer, plan)
            # Under DDP every process reads process 0's checkpoint folder: none may leave (and
            # delete a temporary folder) before all have read it.
            trainer.strategy.barrier("cellsmith-best-weights")
        plan.cpu()
        self.is_global_zero = trainer.is_global_zero
        if self.module is not None:
            self.module.eval()
        return trainer

    def save(self, path: str | Path) -> Path:
        """Write the model folder atomically (``config.yaml``, ``genespace.json``, ``setup.json``,
        ``weights.safetensors``, ``cellsmith_model.json`` and the workflow's extras).

        In the extra processes of a multi-device run this writes nothing (process 0 writes).
        """
        self.require_trained()
        if not self.is_global_zero:
            return Path(path)
        return write_model_dir(
            path,
            workflow=self.workflow,
            model_class=type(self).__name__,
            config=self.config,
            setup=self.setup_dict(),
            weights=self.module.state_dict(),
            genespace=self.genespace,
            extras=self.extra_files(),
        )

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Load a folder written by :meth:`save` (in any process); the weights are read from
        safetensors, never unpickled.

        Raises
        ------
        ModelDirectoryError
            A folder of another workflow, of a newer format, with missing files or unsafe weights.
        """
        files = read_model_dir(
            path, workflow=cls.workflow, config_class=cls.config_class, command=cls.command, legacy=cls.read_legacy
        )
        model = cls(runnable_here(files.config))
        model.genespace = files.genespace
        history = files.file(HISTORY)
        model.history = pd.read_csv(history) if history is not None else None
        model.restore(files)
        model.module.eval()
        return model


def read_history(path: Path) -> pd.DataFrame | None:
    """One row per epoch of Lightning's CSV log (train and validation rows merged)."""
    if not path.is_file():
        return None
    log = pd.read_csv(path)
    if log.empty or "epoch" not in log:
        return None
    return log.drop(columns=[c for c in ("step",) if c in log]).groupby("epoch", as_index=False).first()


def merge_history(earlier: pd.DataFrame | None, later: pd.DataFrame | None) -> pd.DataFrame | None:
    """Epochs of an interrupted run followed by those of its resumption."""
    if earlier is None or later is None:
        return later if earlier is None else earlier
    return pd.concat([earlier[earlier["epoch"] < later["epoch"].min()], later], ignore_index=True)


def deprecated(message: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an entry point of cellsmith 0.1 kept for one release: it warns, then runs."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            warnings.warn(message, CellsmithDeprecationWarning, stacklevel=2)
            return function(*args, **kwargs)

        return wrapper

    return decorate
