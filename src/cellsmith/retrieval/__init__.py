"""Perturbation retrieval benchmark: which perturbation produced these cells?

Raw counts are masked (:func:`mask_counts`) before any normalisation, embedders are fitted on
training cells only, libraries of perturbation entries are ranked for held-out cells or
pseudo-bulks, and the metrics come from :mod:`cellsmith.metrics.retrieval`.
"""

from __future__ import annotations

from cellsmith._lazy import lazy_exports

_EXPORTS = {
    "BalancedBatchSampler": "cellsmith.retrieval.heads",
    "Embedder": "cellsmith.retrieval.embedders",
    "FoundationConfig": "cellsmith.retrieval.config",
    "HeadConfig": "cellsmith.retrieval.heads",
    "HeadEmbedder": "cellsmith.retrieval.head_model",
    "Library": "cellsmith.retrieval.libraries",
    "LogRegEmbedder": "cellsmith.retrieval.embedders",
    "PCAEmbedder": "cellsmith.retrieval.embedders",
    "QuerySpec": "cellsmith.retrieval.splits",
    "RetrievalConfig": "cellsmith.retrieval.config",
    "RetrievalHead": "cellsmith.retrieval.head_model",
    "RetrievalResult": "cellsmith.retrieval.runner",
    "RetrievalWarning": "cellsmith.retrieval.masking",
    "ScreenCounts": "cellsmith.retrieval.masking",
    "Split": "cellsmith.retrieval.splits",
    "build_library": "cellsmith.retrieval.libraries",
    "build_queries": "cellsmith.retrieval.splits",
    "make_embedder": "cellsmith.retrieval.factory",
    "mask_counts": "cellsmith.retrieval.masking",
    "register_embedder": "cellsmith.retrieval.factory",
    "run_retrieval": "cellsmith.retrieval.runner",
    "score": "cellsmith.retrieval.libraries",
    "split_cells": "cellsmith.retrieval.splits",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
