"""Writing outputs so that nothing is left half-written when a run fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cellsmith._interrupt import raise_if_interrupted
from cellsmith.errors import InputError


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the file into place; on error nothing is left."""
    return write_atomic_files({Path(path): write})[0]


def write_atomic_files(writers: Mapping[Path, Callable[[Path], None]]) -> list[Path]:
    """Write several files that belong together (e.g. predictions and their siblings).

    Each ``writer(tmp_path)`` writes a temporary file beside its destination; only when all have
    succeeded are they moved into place, so an error or an interruption (Ctrl-C, SIGTERM) while
    writing leaves neither a half-written file nor some files of the set without the others.
    """
    temps: dict[Path, Path] = {}
    try:
        for path, write in writers.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
            os.close(fd)
            temps[path] = Path(tmp)
            temps[path].unlink()  # writers (h5py, savefig) create the file themselves
            write(temps[path])
        raise_if_interrupted()
        for path, tmp in temps.items():
            tmp.replace(path)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return list(writers)


@contextmanager
def atomic_output_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path`` and move it to ``path`` when the block ends
    without an error; an existing ``path`` is replaced only then. On error nothing is written.

    Raises
    ------
    InputError
        When ``path`` is the working folder, one of its parents or the home folder (replacing
        it would delete everything in it).
    """
    path = Path(path)
    resolved = path.resolve()
    if resolved == Path.home().resolve() or resolved in (Path.cwd(), *Path.cwd().parents):
        raise InputError(
            f"output folder {path} is the current folder, a folder above it or the home folder, which "
            f"would be replaced as a whole; pass a new folder, e.g. {path / 'cellsmith_output'}."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        raise_if_interrupted()
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        tmp.replace(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
