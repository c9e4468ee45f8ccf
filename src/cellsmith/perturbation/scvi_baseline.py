"""The conditional scVI of :mod:`cellsmith.scvi` as a fourth baseline (perturbation mode).

It decodes a control cell under a perturbation label it was trained on, so it predicts only
targets seen in fine-tuning (the held-out-cells split); for unseen targets it is left out
of the comparison, and the evaluation says so. It is trained on the raw counts of the
training cells with all genes of the screen, so its log1p(CP10k) is normalised over the same
genes as the real cells'.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellsmith._logging import logger
from cellsmith.data.normalize import log1p_normalize

SCVI_DIR = "scvi_baseline"


def train_scvi_baseline(
    cells: ad.AnnData, out_dir: Path, *, perturbation_key: str, control_label: str,
    context_key: str | None, max_epochs: int, seed: int, counts_layer: str | None = None,
) -> None:
    """Train :class:`~cellsmith.scvi.ConditionalSCVI` on ``cells`` and save it in ``out_dir/scvi_baseline``."""
    from cellsmith.scvi import ConditionalSCVI, SCVIConfig

    logger.info("training the conditional scVI baseline on %d cells", cells.n_obs)
    model = ConditionalSCVI(SCVIConfig(max_epochs=max_epochs, seed=seed, progress_bar=False))
    model.train(
        cells, batch_key=context_key, perturbation_key=perturbation_key, control_label=control_label,
        counts_layer=counts_layer, out_dir=out_dir / "scvi_training",
    )
    model.save(out_dir / SCVI_DIR)


def scvi_prediction(
    model_dir: Path,
    pred: ad.AnnData,
    controls: ad.AnnData | None,
    *,
    perturbation_key: str,
    control_label: str,
    seed: int = 0,
) -> ad.AnnData | None:
    """scVI's prediction with the targets and cell numbers of ``pred`` (and its control cells),
    from the raw-count ``controls`` (counts drawn from its predictive distribution, then
    log1p(CP10k) over all its genes like the real cells); None when the model folder has no scVI baseline or a
    target was not seen in training."""
    if not (model_dir / SCVI_DIR).is_dir() or controls is None:
        return None
    from cellsmith.scvi import ConditionalSCVI

    model = ConditionalSCVI.load(model_dir / SCVI_DIR)
    labels = pred.obs[perturbation_key].astype(str).to_numpy()
    targets = sorted(set(labels) - {control_label})
    seen = set(model.setup.categories[perturbation_key])
    if not set(targets) <= seen:
        logger.warning(
            "the scVI baseline is left out: it cannot predict targets unseen in training (%s)",
            ", ".join(sorted(set(targets) - seen)),
        )
        return None
    rng = np.random.default_rng(seed)
    values = np.asarray(pred.X, dtype=np.float32).copy()
    columns = model.genespace.index_map(list(pred.var_names))
    if (columns < 0).any():
        logger.warning("the scVI baseline is left out: it was trained without some predicted genes")
        return None
    for target in targets:
        at = np.flatnonzero(labels == target)
        picked = rng.choice(controls.n_obs, at.size)  # with replacement: names made unique below
        source = ad.AnnData(
            X=controls.X[picked],
            obs=controls.obs.iloc[picked].set_axis([f"control{i}" for i in range(at.size)]),
            var=controls.var,
            layers={name: layer[picked] for name, layer in controls.layers.items()},
        )
        # Sampled counts, not the predicted means: log1p of a mean is not the mean of log1p of
        # sparse counts, and the real cells are counts.
        sampled = model.predict(source, set={perturbation_key: target}, seed=seed).layers["sampled_counts"]
        decoded = log1p_normalize(sp.csr_matrix(sampled, dtype=np.float32)).toarray()
        values[at] = decoded[:, columns]
    return ad.AnnData(X=values, obs=pred.obs[[perturbation_key]].copy(), var=pred.var.copy())
