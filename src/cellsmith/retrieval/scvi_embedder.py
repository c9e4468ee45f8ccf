"""The ``scvi`` embedder: posterior-mean latent of cellsmith's conditional scVI (issue 4).

Trained without labels (no perturbation, no batch key) on the masked training counts, so the
latent is an unsupervised embedding like PCA's, on the count likelihood instead of log1p.
"""

from __future__ import annotations

import anndata as ad
import pandas as pd

from cellsmith.retrieval.embedders import Embedder
from cellsmith.retrieval.masking import ScreenCounts


def _as_anndata(counts: ScreenCounts) -> ad.AnnData:
    return ad.AnnData(X=counts.csr(), var=pd.DataFrame(index=list(counts.genes)))


class ScviEmbedder(Embedder):
    """log-likelihood-trained latent of :class:`cellsmith.scvi.ConditionalSCVI`."""

    def __init__(self, name: str = "scvi", *, max_epochs: int = 30, n_latent: int = 10):
        super().__init__(name)
        self.max_epochs = max_epochs
        self.n_latent = n_latent
        self._model = None

    def fit(self, train, labels, *, val, val_labels, seed):
        from cellsmith.scvi import ConditionalSCVI, SCVIConfig

        config = SCVIConfig(max_epochs=self.max_epochs, n_latent=self.n_latent,
                            kl_warmup_epochs=max(1, self.max_epochs // 2), seed=seed, progress_bar=False)
        self._model = ConditionalSCVI(config).train(_as_anndata(train), batch_key=None)
        return self

    def transform(self, counts):
        return self._model.get_latent(_as_anndata(counts)).astype("float32")
