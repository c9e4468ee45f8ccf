"""What both phases check in their model folders: the gene-space digest of the weights, and the
layout of cellsmith 0.1 folders (an info JSON beside ``genespace.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cellsmith.data import GeneSpace
from cellsmith.errors import GeneSpaceError, ModelDirectoryError
from cellsmith.nn.saving import ModelFiles


def require_digest(files: ModelFiles) -> GeneSpace:
    """The gene space of a read folder, refused when it is not the one the weights were trained
    in (``setup["genespace_digest"]``): the folder was edited."""
    space = files.genespace
    if space is None:
        raise ModelDirectoryError(f"{files.path} has no genespace.json; save or train the model again.")
    _same_digest(files.path, space, files.setup["genespace_digest"])
    return space


def read_legacy_info(directory: Path, filename: str, command: str) -> tuple[dict[str, Any], GeneSpace]:
    """The info JSON and gene space of a cellsmith 0.1 folder (digest checked)."""
    if not (directory / filename).is_file() or not (directory / "genespace.json").is_file():
        raise ModelDirectoryError(
            f"{directory} has neither cellsmith_model.json nor the {filename} of cellsmith 0.1; pass "
            f"the --out folder of `{command}`."
        )
    info = json.loads((directory / filename).read_text())
    space = GeneSpace.read(directory / "genespace.json")
    _same_digest(directory, space, info["genespace_digest"])
    return info, space


def _same_digest(directory: Path, space: GeneSpace, trained: str) -> None:
    if space.digest != trained:
        raise GeneSpaceError(
            f"{directory}: genespace.json has digest {space.digest} but the weights were trained on "
            f"{trained}; the folder was edited."
        )
