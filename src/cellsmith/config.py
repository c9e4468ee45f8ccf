"""Base configuration: pydantic models that forbid unknown keys and round-trip through YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cellsmith.data.io import read_yaml
from cellsmith.errors import ConfigError, InputError


class CellsmithConfig(BaseModel):
    """Base class of every model and workflow config.

    Unknown keys are an error (a typo must not silently fall back to a default), and a config
    is saved next to every trained model so that it can be reloaded exactly.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, **overrides: Any) -> Self:
        """Load a config from YAML (or defaults when ``path`` is None), then apply overrides.

        Raises
        ------
        ConfigError
            When the file is missing, is not a YAML mapping or holds invalid values.
        """
        values: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            try:
                loaded = read_yaml(path, "config file") or {}
            except InputError as err:
                raise ConfigError(str(err)) from None
            if not isinstance(loaded, dict):
                raise ConfigError(
                    f"config file {path} holds a {type(loaded).__name__}, not a mapping of "
                    "option: value; write one option per line, e.g. `max_epochs: 50`."
                )
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as err:
            source = f"config file {path}" if path is not None else f"{cls.__name__} options"
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise ConfigError(
                f"{source} is invalid ({problems}). Valid options: {', '.join(cls.model_fields)}."
            ) from None

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML (all fields, defaults included)."""
        Path(path).write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
