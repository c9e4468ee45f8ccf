"""A name -> function registry that raises on unknown names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from cellsmith.errors import InputError

F = TypeVar("F", bound=Callable)


class MetricRegistry:
    """Named metric functions of one task.

    Examples
    --------
    >>> REGISTRY = MetricRegistry("demo")
    >>> @REGISTRY.register("mae")
    ... def mae(pred, truth): ...
    >>> REGISTRY.get("mae") is mae
    True
    """

    def __init__(self, task: str):
        self.task = task
        self._functions: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def decorate(function: F) -> F:
            if name in self._functions:
                raise ValueError(f"metric '{name}' is registered twice for {self.task}")
            self._functions[name] = function
            return function

        return decorate

    def get(self, name: str) -> Callable:
        try:
            return self._functions[name]
        except KeyError:
            raise InputError(
                f"unknown {self.task} metric '{name}'; known: {', '.join(self._functions)}."
            ) from None

    def names(self) -> list[str]:
        return list(self._functions)

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)
