"""Metrics: pure functions ``(pred, truth) -> float | DataFrame`` in named registries.

One file per task (``deconvolution``, ``reconstruction``, ``retrieval``, ...), each with its own
:class:`MetricRegistry`; asking a registry for an unknown name is an error that lists the known
ones. Models never compute benchmark metrics themselves.
"""

from cellsmith.metrics.registry import MetricRegistry

__all__ = ["MetricRegistry"]
