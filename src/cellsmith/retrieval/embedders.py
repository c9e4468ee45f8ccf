"""Embedders: one interface (fit on training cells only, then transform any masked counts).

An embedder maps :class:`~cellsmith.retrieval.masking.ScreenCounts` to vectors; libraries and
queries are compared in that space with the embedder's ``similarity`` ("cosine" or "dot").
Embedders that also expose a torch ``backbone`` (PCA as a linear layer, a foundation
transformer) can carry a learned head (:mod:`cellsmith.retrieval.heads`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from cellsmith.retrieval.masking import ScreenCounts

Similarity = Literal["cosine", "dot"]


class Embedder(ABC):
    """Fit on training cells, embed any counts of the same genes."""

    #: How library entries and queries are compared in this space.
    similarity: Similarity = "cosine"
    #: Whether the embedding is a class-probability vector over the candidates (then the
    #: ``class`` library ranks candidates by class probability).
    class_probabilities: bool = False

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def fit(
        self, train: ScreenCounts, labels: np.ndarray, *, val: ScreenCounts, val_labels: np.ndarray, seed: int
    ) -> Embedder:
        """Fit on training cells; ``labels`` are candidate indices. ``val`` is for early stopping only."""

    @abstractmethod
    def transform(self, counts: ScreenCounts) -> np.ndarray:
        """Embeddings, rows x dimensions (float32)."""


class TorchBackbone(ABC):
    """An embedder whose embedding is a torch module applied to per-row features."""

    @abstractmethod
    def features(self, counts: ScreenCounts) -> torch.Tensor:
        """Input of :meth:`backbone`, one row per count row."""

    @abstractmethod
    def backbone(self) -> nn.Module:
        """A module mapping :meth:`features` rows to the embedding (a fresh copy each call)."""


class PCAEmbedder(Embedder, TorchBackbone):
    """log1p(CP10k) -> PCA fitted on the training cells."""

    def __init__(self, name: str = "pca", *, n_components: int = 50):
        super().__init__(name)
        self.n_components = n_components
        self._pca: PCA | None = None

    def fit(self, train, labels, *, val, val_labels, seed):
        x = train.log1p_cp10k()
        k = max(1, min(self.n_components, x.shape[1], x.shape[0] - 1))
        self._pca = PCA(n_components=k, random_state=seed).fit(x)
        return self

    def transform(self, counts):
        return self._pca.transform(counts.log1p_cp10k()).astype(np.float32)

    def features(self, counts):
        return torch.from_numpy(counts.log1p_cp10k())

    def backbone(self):
        components = torch.tensor(self._pca.components_, dtype=torch.float32)
        layer = nn.Linear(components.shape[1], components.shape[0])
        with torch.no_grad():
            layer.weight.copy_(components)
            layer.bias.copy_(-components @ torch.tensor(self._pca.mean_, dtype=torch.float32))
        return layer


class LogRegEmbedder(Embedder):
    """Multinomial logistic regression on (standardised) PCA features; the embedding is the
    class-probability vector, compared by dot product. With the ``class`` library it ranks
    candidates by class probability (the baseline as usually run); with the others its
    probability vectors are matched to those of training cells."""

    similarity: Similarity = "dot"
    class_probabilities = True

    def __init__(self, name: str = "logreg", *, n_components: int = 50, C: float = 1.0, max_iter: int = 1000):
        super().__init__(name)
        self._pca = PCAEmbedder(n_components=n_components)
        self._scaler = StandardScaler()
        self._model = LogisticRegression(C=C, max_iter=max_iter)
        self.n_classes = 0

    def fit(self, train, labels, *, val, val_labels, seed):
        self._pca.fit(train, labels, val=val, val_labels=val_labels, seed=seed)
        features = self._scaler.fit_transform(self._pca.transform(train))
        self._model.set_params(random_state=seed).fit(features, labels)
        self.n_classes = int(labels.max()) + 1
        return self

    def transform(self, counts):
        proba = self._model.predict_proba(self._scaler.transform(self._pca.transform(counts)))
        # Classes absent from training still get a (zero) column, so indices match candidates.
        out = np.zeros((proba.shape[0], self.n_classes), dtype=np.float32)
        out[:, self._model.classes_] = proba
        return out
