"""Embedder specs (``pca``, ``logreg``, ``foundation``, ``head:BASE[:MODE[:LOSS]]``) -> embedders."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import get_args

from cellsmith.errors import InputError
from cellsmith.retrieval.config import RetrievalConfig
from cellsmith.retrieval.embedders import Embedder, LogRegEmbedder, PCAEmbedder, TorchBackbone
from cellsmith.retrieval.foundation import FoundationEmbedder, load_scgpt
from cellsmith.retrieval.head_model import HeadEmbedder
from cellsmith.retrieval.heads import HeadConfig, HeadLossName, HeadMode


def _foundation(name: str, config: RetrievalConfig) -> Embedder:
    cfg = config.foundation
    model = load_scgpt(cfg.checkpoint)
    aliases = {}
    if cfg.aliases is not None:
        if not Path(cfg.aliases).is_file():
            raise InputError(
                f"foundation alias map {cfg.aliases} does not exist; pass a JSON file {{input gene: vocabulary gene}}."
            )
        aliases = json.loads(Path(cfg.aliases).read_text())
    return FoundationEmbedder(
        name, model, aliases=aliases, n_bins=cfg.n_bins, min_coverage=cfg.min_coverage, batch_size=cfg.batch_size,
        max_length=cfg.max_length,
    )


def _scvi(name: str, config: RetrievalConfig) -> Embedder:
    from cellsmith.retrieval.scvi_embedder import ScviEmbedder

    return ScviEmbedder(name, max_epochs=config.scvi_max_epochs)


_BASES: dict[str, Callable[[str, RetrievalConfig], Embedder]] = {
    "pca": lambda name, c: PCAEmbedder(name, n_components=c.n_pcs, max_fit_cells=c.pca_max_cells),
    "logreg": lambda name, c: LogRegEmbedder(name, n_components=c.n_pcs, C=c.logreg_c, max_fit_cells=c.pca_max_cells),
    "foundation": _foundation,
    "scvi": _scvi,
}


def register_embedder(name: str, build: Callable[[str, RetrievalConfig], Embedder]) -> None:
    """Make ``name`` usable in ``--embedders`` (for embedders of other workflows)."""
    _BASES[name] = build


def embedder_names() -> list[str]:
    return [*_BASES, *(f"head:{b}" for b in ("pca", "foundation"))]


def make_embedder(spec: str, config: RetrievalConfig, *, work_dir: Path | None = None) -> Embedder:
    """Build the (unfitted) embedder named by ``spec``.

    ``head:BASE[:MODE[:LOSS]]`` puts a learned head on BASE's backbone; MODE is ``head``
    (backbone frozen), ``finetune`` or ``lora`` (foundation only), LOSS ``infonce`` or ``classification`` (defaults from
    ``config.head``).
    """
    parts = spec.strip().split(":")
    if parts[0] != "head":
        if len(parts) != 1 or parts[0] not in _BASES:
            raise InputError(f"unknown embedder '{spec}'; known: {', '.join(embedder_names())}.")
        return _BASES[parts[0]](spec, config)
    if len(parts) < 2 or len(parts) > 4 or parts[1] not in _BASES:
        raise InputError(f"embedder '{spec}' is not head:BASE[:MODE[:LOSS]] with BASE among {', '.join(_BASES)}.")
    overrides = dict(zip(("mode", "loss"), parts[2:], strict=False))
    modes, losses = get_args(HeadMode), get_args(HeadLossName)
    if overrides.get("mode", modes[0]) not in modes or overrides.get("loss", losses[0]) not in losses:
        raise InputError(f"embedder '{spec}': MODE is one of {modes}, LOSS one of {losses}.")
    base = _BASES[parts[1]](parts[1], config)
    if overrides.get("mode") == "lora" and not isinstance(base, FoundationEmbedder):
        raise InputError(f"embedder '{spec}': LoRA adapts a foundation transformer; use head:foundation:lora.")
    if not isinstance(base, TorchBackbone):
        raise InputError(f"embedder '{spec}': '{parts[1]}' has no torch backbone; put heads on pca or foundation.")
    if isinstance(base, FoundationEmbedder):
        # attention memory grows with batch x tokens^2: embed as many cells at once as the frozen embedder
        overrides["batch_size"] = min(config.head.batch_size, config.foundation.batch_size)
    head_config = HeadConfig(**{**config.head.model_dump(), **overrides})
    return HeadEmbedder(spec, base, head_config, work_dir=work_dir)
