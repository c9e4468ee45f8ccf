"""The one model-directory format of every workflow, written atomically and read without pickle.

A model directory holds:

- ``cellsmith_model.json``: the manifest (``workflow``, ``model_class``, ``format_version``,
  ``cellsmith_version``, the files it wrote);
- ``config.yaml``: the workflow config (training options and seed included);
- ``genespace.json``: the ordered genes of the model (absent for a model with no gene space);
- ``setup.json``: the workflow's data setup (keys, category maps, counts layer, label key ...);
- ``weights.safetensors``: the module's tensors (safetensors holds tensors only: reading it can
  never run code, unlike a pickled ``.pt``);
- workflow extras (``history.csv``, a signature, a report ...).

Model folders of cellsmith 0.1 have no manifest; each workflow decides whether it can read
their weights with ``torch.load(..., weights_only=True)`` (see :func:`load_legacy_state`).
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cellsmith._interrupt import raise_if_interrupted
from cellsmith.config import CellsmithConfig
from cellsmith.data.genespace import GeneSpace
from cellsmith.errors import ConfigError, ModelDirectoryError

FORMAT_VERSION = 1
MANIFEST = "cellsmith_model.json"
CONFIG = "config.yaml"
GENES = "genespace.json"
SETUP = "setup.json"
WEIGHTS = "weights.safetensors"

Config = TypeVar("Config", bound=CellsmithConfig)


def cellsmith_version() -> str:
    """The installed cellsmith version ("unknown" when run from a source tree)."""
    try:
        return version("cellsmith")
    except PackageNotFoundError:  # pragma: no cover - only outside an install
        return "unknown"


@dataclass
class ModelFiles:
    """What a model directory holds, read back (see :func:`read_model_dir`)."""

    path: Path
    config: CellsmithConfig
    setup: dict[str, Any]
    weights: dict[str, torch.Tensor]
    genespace: GeneSpace | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def file(self, name: str) -> Path | None:
        """Path of an extra file of the directory, or None when it is absent."""
        candidate = self.path / name
        return candidate if candidate.is_file() else None


def write_model_dir(
    path: str | Path,
    *,
    workflow: str,
    model_class: str,
    config: CellsmithConfig,
    setup: Mapping[str, Any],
    weights: Mapping[str, torch.Tensor],
    genespace: GeneSpace | None = None,
    extras: Mapping[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write a model directory: everything goes to a temporary folder beside ``path``, which then
    takes its place, so a failed save never leaves a half-written or mixed model.

    Entries of an existing ``path`` that the model does not write (e.g. the ``training/``
    checkpoints of ``cellsmith scvi train``) are kept.

    Parameters
    ----------
    extras
        ``{file name: writer(path)}`` of workflow files (history, report, signature ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        config.to_yaml(tmp / CONFIG)
        (tmp / SETUP).write_text(json.dumps(dict(setup), indent=1))
        if genespace is not None:
            genespace.write(tmp / GENES)
        for name, write in (extras or {}).items():
            write(tmp / name)
        # safetensors refuses tensors that share memory or are not contiguous: store copies.
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in weights.items()}, str(tmp / WEIGHTS))
        manifest = {
            "workflow": workflow,
            "model_class": model_class,
            "format_version": FORMAT_VERSION,
            "cellsmith_version": cellsmith_version(),
            "files": sorted(p.name for p in tmp.iterdir()) + [MANIFEST],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        raise_if_interrupted()
        _replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _replace_dir(new: Path, path: Path) -> None:
    """Move ``new`` to ``path``; entries only ``path`` has are carried over first."""
    if path.exists() and not path.is_dir():
        raise ModelDirectoryError(f"{path} exists and is a file; pass a folder path for the model.")
    if path.is_dir():
        for entry in path.iterdir():
            if not (new / entry.name).exists():
                entry.replace(new / entry.name)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        path.replace(old)
        new.replace(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.replace(path)


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest of a model directory, or None for a folder without one (cellsmith 0.1)."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return None
    try:
        value = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirectoryError(f"{manifest} is not valid JSON ({err}); the model folder is damaged.") from None
    if not isinstance(value, dict):
        raise ModelDirectoryError(f"{manifest} is not a JSON object; the model folder is damaged.")
    return value


def read_model_dir(
    path: str | Path,
    *,
    workflow: str,
    config_class: type[Config],
    command: str,
    legacy: Callable[[Path], ModelFiles] | None = None,
) -> ModelFiles:
    """Read and check a directory written by :func:`write_model_dir`.

    Parameters
    ----------
    workflow
        The workflow the caller can load; a folder of another workflow is refused.
    config_class
        The config of that workflow.
    command
        The command that writes such folders, named in error messages.
    legacy
        Reader of a cellsmith 0.1 folder (no manifest); such folders are refused when None.

    Raises
    ------
    ModelDirectoryError
        A missing folder or file, another workflow, a newer format, weights that are not
        safetensors (e.g. a pickle, which is never unpickled).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModelDirectoryError(f"{path} is a file, not a model folder; pass the --out folder of `{command}`.")
    if not path.is_dir():
        raise ModelDirectoryError(f"model folder {path} does not exist; pass the --out folder of `{command}`.")
    manifest = read_manifest(path)
    if manifest is None:
        if legacy is not None:
            return legacy(path)
        raise ModelDirectoryError(
            f"{path} has no {MANIFEST}, so it is not a cellsmith model folder (or one of a release "
            f"this model cannot convert); pass the --out folder of `{command}`, or retrain."
        )
    found = manifest.get("workflow")
    if found != workflow:
        raise ModelDirectoryError(
            f"{path} holds a '{found}' model, not a '{workflow}' model; pass the --out folder of `{command}`."
        )
    written = manifest.get("format_version")
    if not isinstance(written, int) or written > FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{path} was written by cellsmith {manifest.get('cellsmith_version', '?')} in model format "
            f"{written}; this cellsmith ({cellsmith_version()}) reads format {FORMAT_VERSION} and older. "
            "Upgrade cellsmith to load it."
        )
    missing = [name for name in (CONFIG, SETUP, WEIGHTS) if not (path / name).is_file()]
    if missing:
        raise ModelDirectoryError(f"{path} is incomplete: {', '.join(missing)} missing; save or train the model again.")
    try:
        config = config_class.from_yaml(path / CONFIG)
    except ConfigError as err:
        raise ModelDirectoryError(f"{path}: {err}") from None
    return ModelFiles(
        path=path,
        config=config,
        setup=json.loads((path / SETUP).read_text()),
        weights=read_weights(path / WEIGHTS),
        genespace=GeneSpace.read(path / GENES) if (path / GENES).is_file() else None,
        manifest=manifest,
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (CPU); anything else is refused, never unpickled."""
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelDirectoryError(
            f"{path} is not a safetensors file ({err}); it was not loaded. A model folder from "
            "someone else may hold a pickle that runs code when read: retrain, or ask for the folder "
            "as written by cellsmith."
        ) from None


def load_legacy_state(path: Path) -> Any:
    """A cellsmith 0.1 ``.pt`` read with ``weights_only=True``: tensors, numbers, strings and
    NumPy arrays are allowed; any other object is refused without being created."""
    import numpy as np

    allowed = [
        np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype("int64")), type(np.dtype("float64"))
    ]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the error says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as err:
        # Name what was refused; torch's own text suggests weights_only=False, the unsafe way.
        found = [line.strip() for line in str(err).splitlines() if "Unsupported" in line]
        raise ModelDirectoryError(
            f"{path} holds objects other than tensors and arrays ({found[0] if found else 'not a torch file'}), "
            "so it was refused without being read: unpickling it could run code. Retrain the model "
            "with this cellsmith, or load the folder only if you wrote it yourself."
        ) from None
