"""A perturbation screen in the model's gene space: labels, contexts, log1p(CP10k) rows.

All checks on the user's screen happen here, before anything is trained or written: the
perturbation and context keys exist, control cells exist, every label parses into a set of
targets (``A``, ``A+B``, ``A_B``, ``A+ctrl``), and every perturbation has enough cells. Targets
need not be measured: a target without an embedding in the vocabulary is listed in a warning
and gets a learned embedding (``missing_targets: learn``), or is dropped or refused.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellsmith._logging import logger
from cellsmith.data import GeneSpace, perturbation_sets
from cellsmith.data.rows import count_rows
from cellsmith.errors import InputError
from cellsmith.perturbation.remap import GeneRemap


@dataclass
class Screen:
    """Cells of a screen, remapped into a gene space.

    Attributes
    ----------
    x
        ``(n_cells, n_genes)`` CSR log1p(CP10k), normalised over all measured genes.
    observed
        ``(n_genes,)`` bool: the gene is measured in the screen.
    labels
        Per cell its perturbation label (e.g. ``A``, ``A+B``), or the control label.
    contexts
        Per cell its context (one value ``"all"`` without a context key).
    obs_names
        Cell names of the source AnnData.
    control_label
        The control label.
    dropped_targets
        Perturbations left out, with the reason.
    target_sets
        ``{label: sorted target genes}`` of every perturbation kept.
    unembedded
        Targets of kept perturbations with no embedding in the vocabulary (learned in training).
    """

    x: sp.csr_matrix
    observed: np.ndarray
    labels: np.ndarray
    contexts: np.ndarray
    obs_names: np.ndarray
    control_label: str
    dropped_targets: dict[str, str]
    target_sets: dict[str, tuple[str, ...]]
    unembedded: list[str]

    @property
    def targets(self) -> list[str]:
        """The perturbation labels (controls excluded), sorted."""
        return sorted(set(self.labels) - {self.control_label})

    def rows(self, label: str, context: str | None = None) -> np.ndarray:
        """Row indices of a label (and context)."""
        keep = self.labels == label
        if context is not None:
            keep &= self.contexts == context
        return np.flatnonzero(keep)


def require_obs_column(adata: ad.AnnData, key: str, what: str) -> None:
    """InputError naming the available columns when ``key`` is not in ``adata.obs``."""
    if key not in adata.obs:
        raise InputError(
            f"the {what} key '{key}' is not an obs column of the input (columns: "
            f"{', '.join(map(str, adata.obs.columns)) or 'none'}); pass the column that holds it."
        )


def _usable_targets(
    labels: np.ndarray, control_label: str, embedded: Collection[str], missing_targets: str
) -> tuple[dict[str, tuple[str, ...]], dict[str, str], list[str]]:
    """Perturbations kept (label -> targets), those dropped (label -> why), and the kept
    targets that have no embedding."""
    dropped: dict[str, str] = {}
    usable: dict[str, tuple[str, ...]] = {}
    for label, genes in perturbation_sets(labels, control_label).items():
        if label == control_label:
            continue
        missing = [g for g in genes if g not in embedded]
        if not genes:
            dropped[label] = "a control label other than the control label"
        elif missing and missing_targets == "drop":
            dropped[label] = f"no embedding for {', '.join(missing)}"
        else:
            usable[label] = genes
    unembedded = sorted({g for genes in usable.values() for g in genes if g not in embedded})
    if unembedded and missing_targets == "error":
        raise InputError(
            f"{len(unembedded)} targets have no gene embedding (not in the pretraining vocabulary): "
            f"{', '.join(unembedded[:12])}. Pretrain on data that measure them, or set missing_targets: "
            "learn (an embedding learned from their training cells)."
        )
    if unembedded:
        logger.warning(
            "%d targets have no embedding in the vocabulary (not measured by any pretraining source); "
            "each gets an embedding learned from its training cells and cannot be predicted unseen: %s",
            len(unembedded), ", ".join(unembedded),
        )
    if dropped:
        logger.warning(
            "dropping %d of %d perturbations: %s",
            len(dropped), len(dropped) + len(usable),
            ", ".join(f"{t} ({why})" for t, why in dropped.items()),
        )
    return usable, dropped, unembedded


def prepare_screen(
    adata: ad.AnnData,
    space: GeneSpace,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    context_key: str | None = None,
    missing_targets: str = "learn",
    min_cells: int = 10,
    counts_layer: str | None = None,
    vocabulary: Collection[str] | None = None,
) -> Screen:
    """Check a raw-count screen and put it into ``space``.

    ``vocabulary``: the genes that have an embedding (default: the genes of ``space``); targets
    outside it are handled by ``missing_targets`` (``learn``, ``drop`` or ``error``).

    Raises
    ------
    InputError
        Unknown keys, no control cells, no usable perturbation, or a perturbation with fewer
        than ``min_cells`` cells.
    ScaleError
        When the matrix does not hold raw counts.
    """
    require_obs_column(adata, perturbation_key, "perturbation")
    if context_key is not None:
        require_obs_column(adata, context_key, "context")
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    n_controls = int((labels == control_label).sum())
    if n_controls == 0:
        examples = ", ".join(sorted(set(labels))[:6])
        raise InputError(
            f"no control cells: no cell has {perturbation_key} == '{control_label}' (values "
            f"include {examples}); pass --control-label with the label of the control cells."
        )
    embedded = set(space.names if vocabulary is None else vocabulary)
    usable, dropped, unembedded = _usable_targets(labels, control_label, embedded, missing_targets)
    if not usable:
        raise InputError(
            f"no perturbation of '{perturbation_key}' can be modelled ({len(dropped)} dropped: "
            + ", ".join(list(dropped)[:8])
            + "); check the labels and --control-label."
        )
    counts = {label: int((labels == label).sum()) for label in sorted(usable)}
    too_few = {t: n for t, n in counts.items() if n < min_cells}
    if too_few:
        raise InputError(
            f"{len(too_few)} perturbations have fewer than min_cells={min_cells} cells "
            f"({', '.join(f'{t}: {n}' for t, n in too_few.items())}); remove them from the "
            "screen or lower min_cells in the config."
        )
    keep = np.isin(labels, [*usable, control_label])
    remap = GeneRemap(space, list(adata.var_names), name="screen")
    x = remap.transform(count_rows(adata, layer=counts_layer), rows=keep)
    contexts = adata.obs[context_key].astype(str).to_numpy() if context_key else np.full(adata.n_obs, "all")
    logger.info(
        "screen: %d cells (%d controls), %d perturbations, %d contexts",
        int(keep.sum()), n_controls, len(usable), len(set(contexts[keep])),
    )
    return Screen(
        x=x,
        observed=remap.mask,
        labels=labels[keep],
        contexts=contexts[keep],
        obs_names=adata.obs_names.to_numpy()[keep],
        control_label=control_label,
        dropped_targets=dropped,
        target_sets=usable,
        unembedded=unembedded,
    )
