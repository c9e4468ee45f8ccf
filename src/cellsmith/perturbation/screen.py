"""A perturbation screen in the model's gene space: labels, contexts, log1p(CP10k) rows.

All checks on the user's screen happen here, before anything is trained or written: the
perturbation and context keys exist, control cells exist, every target is a single gene of
the gene space (or is dropped with a warning), and every perturbation has enough cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellsmith._logging import logger
from cellsmith.data import GeneSpace, parse_perturbation
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
        Per cell its target gene, or the control label.
    contexts
        Per cell its context (one value ``"all"`` without a context key).
    obs_names
        Cell names of the source AnnData.
    control_label
        The control label.
    dropped_targets
        Targets left out (not in the gene space, or combinations), with the reason.
    """

    x: sp.csr_matrix
    observed: np.ndarray
    labels: np.ndarray
    contexts: np.ndarray
    obs_names: np.ndarray
    control_label: str
    dropped_targets: dict[str, str]

    @property
    def targets(self) -> list[str]:
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
    labels: np.ndarray, control_label: str, space: GeneSpace, missing_targets: str
) -> tuple[set[str], dict[str, str]]:
    dropped: dict[str, str] = {}
    usable: set[str] = set()
    for label in sorted(set(labels) - {control_label}):
        genes = parse_perturbation(label, control_label)
        if len(genes) != 1:
            dropped[label] = "not a single-gene perturbation"
        elif next(iter(genes)) != label:
            dropped[label] = f"label is not a gene name (parsed as {next(iter(genes))})"
        elif label not in space:
            dropped[label] = "target gene not in the gene space (no gene embedding)"
        else:
            usable.add(label)
    if dropped and missing_targets == "error":
        raise InputError(
            f"{len(dropped)} perturbations cannot be modelled: "
            + "; ".join(f"{t}: {why}" for t, why in list(dropped.items())[:8])
            + ". Add the targets as priority genes of the gene space (`cellsmith genes hvg "
            "--priority-genes-from`) or set missing_targets: drop."
        )
    if dropped:
        logger.warning(
            "dropping %d of %d perturbations: %s",
            len(dropped), len(dropped) + len(usable),
            ", ".join(f"{t} ({why})" for t, why in dropped.items()),
        )
    return usable, dropped


def prepare_screen(
    adata: ad.AnnData,
    space: GeneSpace,
    *,
    perturbation_key: str = "target_gene",
    control_label: str = "non-targeting",
    context_key: str | None = None,
    missing_targets: str = "drop",
    min_cells: int = 10,
    counts_layer: str | None = None,
) -> Screen:
    """Check a raw-count screen and put it into ``space``.

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
    usable, dropped = _usable_targets(labels, control_label, space, missing_targets)
    if not usable:
        raise InputError(
            f"no perturbation of '{perturbation_key}' can be modelled ({len(dropped)} dropped: "
            + ", ".join(list(dropped)[:8])
            + "); make the target genes priority genes of the gene space."
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
    )
