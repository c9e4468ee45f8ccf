"""The scvi embedder (conditional scVI latent) inside the retrieval benchmark."""

import numpy as np

from cellsmith.retrieval import RetrievalConfig, run_retrieval


def test_scvi_latent_embeds_and_is_reproducible(small_screen):
    config = RetrievalConfig(embedders=["scvi"], libraries=["mean"], queries=["pseudobulk:10"],
                             leakage_gap=False, scvi_max_epochs=2)
    first = run_retrieval(small_screen, config, progress=False)
    second = run_retrieval(small_screen, config, progress=False)
    assert first.metrics["mrr"].tolist() == second.metrics["mrr"].tolist()
    chance_mrr = np.mean(1 / np.arange(1, 10))  # 9 candidates ranked at random
    assert first.metrics["mrr"].iloc[0] > chance_mrr + 0.1
