"""Figure helpers shared by the workflows' reports."""

from __future__ import annotations


def legend_outside(ax, **options) -> None:
    """Put the legend of ``ax`` to the right of the axes, where it cannot cover data points.

    Figures are saved with ``bbox_inches="tight"``, so the figure grows to hold it.
    """
    options = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, "frameon": False,
               "fontsize": 8, **options}
    ax.legend(**options)


def legend_below(fig, ax, **options) -> None:
    """One legend for the whole figure, below the panels (the handles and labels of ``ax``)."""
    handles, labels = ax.get_legend_handles_labels()
    options = {"loc": "upper center", "bbox_to_anchor": (0.5, 0.0), "ncol": max(1, len(labels)),
               "frameon": False, "fontsize": 9, **options}
    fig.legend(handles, labels, **options)


def r_text(r: float) -> str:
    """A Pearson r for a legend or title; ``n/a`` when undefined (fewer than 3 samples)."""
    return "n/a" if r != r else f"{r:.3f}"  # r != r: NaN
