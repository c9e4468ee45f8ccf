"""User-facing errors.

Every error a user can trigger is a :class:`CellsmithError` subclass whose message names the
input, what was found and how to fix it. The CLI prints it as ``error: <message>`` without a
traceback and exits with status 2.
"""

from __future__ import annotations


class CellsmithError(Exception):
    """Base class of every error caused by user input or configuration."""


class InputError(CellsmithError):
    """A file, key, column or argument is missing or malformed."""


class ScaleError(CellsmithError):
    """Data are on the wrong scale (e.g. log1p where raw counts are required)."""


class GeneSpaceError(CellsmithError):
    """Genes do not match a model's gene space (overlap, duplicates, digest)."""


class ConfigError(CellsmithError):
    """A configuration file or option is invalid."""


class DatasetNotFoundError(InputError):
    """A public dataset file is not at the expected path."""


class ModelDirectoryError(InputError):
    """A saved model folder is of another workflow, of a newer format, incomplete or unsafe."""


class CellsmithDeprecationWarning(FutureWarning):
    """An option or entry point of an earlier release that still works but will be removed.

    A FutureWarning (not a DeprecationWarning), so that users see it by default.
    """
