"""Training curves of a ConditionalSCVI run (from ``model.history``)."""

from __future__ import annotations

import pandas as pd

from cellsmith.report.figures import legend_outside

_TERMS = (
    ("loss", "ELBO + penalty"), ("reconstruction", "reconstruction NLL"), ("kl", "KL"),
    ("penalty", "always-zero penalty"),
)


def training_curves(history: pd.DataFrame):
    """One panel per loss term, training and validation per epoch (validation KL at weight 1)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(_TERMS), figsize=(4 * len(_TERMS), 3.2))
    for ax, (term, title) in zip(axes, _TERMS, strict=True):
        for stage, color in (("train", "#3b6fb6"), ("val", "#e0803a")):
            column = f"{stage}_{term}"
            if column in history:
                ax.plot(history["epoch"], history[column], color=color, label=stage)
        ax.set_title(title)
        ax.set_xlabel("epoch")
    legend_outside(axes[-1])
    fig.tight_layout()
    return fig
