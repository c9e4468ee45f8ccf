"""Saved folders of both phases: an info JSON beside ``genespace.json``, checked on load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cellsmith.data import GeneSpace
from cellsmith.errors import GeneSpaceError, InputError


def write_info(directory: Path, filename: str, genespace: GeneSpace, info: dict[str, Any]) -> None:
    """Write ``genespace.json`` and ``filename`` (``info`` plus the gene-space digest)."""
    genespace.write(directory / "genespace.json")
    (directory / filename).write_text(json.dumps({"genespace_digest": genespace.digest, **info}, indent=2))


def read_info(directory: str | Path, filename: str, command: str) -> tuple[dict[str, Any], GeneSpace]:
    """Read what :func:`write_info` wrote; errors name the folder and the command that writes it."""
    directory = Path(directory)
    if not (directory / filename).is_file():
        raise InputError(f"{directory} has no {filename}; pass the --out folder of `{command}`.")
    info = json.loads((directory / filename).read_text())
    space = GeneSpace.read(directory / "genespace.json")
    if space.digest != info["genespace_digest"]:
        raise GeneSpaceError(
            f"{directory}: genespace.json has digest {space.digest} but the weights were trained on "
            f"{info['genespace_digest']}; the folder was edited."
        )
    return info, space
