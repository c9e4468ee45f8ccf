"""Baselines every prediction is scored beside, fitted on the training cells of a screen.

- ``no_change``: the control cells themselves;
- ``perturbation_mean``: controls plus the mean shift of the training perturbations (the
  Virtual Cell Challenge's cell-mean baseline);
- ``linear``: ridge regression of the training single perturbations' mean shifts on gene
  embeddings from a PCA of the training pseudobulks (lambda 0.1): a target's shift is
  ``G W G[target] + b`` with ``G`` the genes' PCA coordinates and ``b`` the mean shift; a
  combination sums the ``G W G[target]`` of its targets; a target outside the gene space (no
  PCA coordinates) adds nothing;
- ``additive``: controls plus the sum of the single-target mean shifts of the perturbation's
  targets (Ahlmann-Eltze et al. 2025; GEARS' additive baseline); a target without a training
  single adds the mean single shift.

A perturbation is a label such as ``A`` or ``A+B`` (:func:`cellsmith.data.parse_perturbation`).
All values are log1p(CP10k); predicted cells are clipped at 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cellsmith.data import GeneSpace, parse_perturbation, perturbation_sets
from cellsmith.errors import InputError

BASELINES: tuple[str, ...] = ("no_change", "perturbation_mean", "linear", "additive")


def group_means(x: sp.csr_matrix, labels: np.ndarray, groups: list[str]) -> np.ndarray:
    """``(len(groups), G)`` mean row of each group of ``labels``, as one sparse product
    (averaging matrix x CSR cells): no row is copied or densified."""
    code = {g: i for i, g in enumerate(groups)}
    index = np.array([code.get(label, -1) for label in labels])
    rows = np.flatnonzero(index >= 0)
    sizes = np.bincount(index[rows], minlength=len(groups)).astype(np.float64)
    average = sp.csr_matrix((1.0 / sizes[index[rows]], (index[rows], rows)), shape=(len(groups), x.shape[0]))
    return np.asarray((average @ x).toarray())


@dataclass
class Baselines:
    """Fitted baselines in a gene space.

    Attributes
    ----------
    genespace
        Gene order of every vector here.
    mean_shift
        ``(G,)`` mean over training perturbations of (perturbation mean - control mean).
    gene_pca
        ``(G, k)`` gene coordinates of the PCA of the training pseudobulk shifts.
    ridge_weights
        ``(k, k)`` ridge solution of the linear baseline.
    single_targets, single_shifts
        Targets of the training single perturbations and their ``(n, G)`` mean shifts.
    control_label
        Parts of labels equal to it are not targets.
    """

    genespace: GeneSpace
    mean_shift: np.ndarray
    gene_pca: np.ndarray
    ridge_weights: np.ndarray
    single_targets: list[str]
    single_shifts: np.ndarray
    control_label: str = "non-targeting"

    @classmethod
    def fit(
        cls,
        x: sp.csr_matrix,
        labels: np.ndarray,
        *,
        control_label: str,
        genespace: GeneSpace,
        n_components: int = 10,
        ridge: float = 0.1,
    ) -> Baselines:
        """Fit on the cells ``x`` (CSR log1p(CP10k), cells x genes of ``genespace``) whose
        ``labels`` are not None (e.g. None for all but the training cells)."""
        targets = sorted(set(labels) - {control_label, None})
        if not targets:
            raise InputError("the baselines need at least one training perturbation; got none.")
        means = group_means(x, labels, [control_label, *targets])
        shifts = (means[1:] - means[0]).T  # (G, P)
        mean_shift = shifts.mean(1)
        centered = shifts - mean_shift[:, None]
        k = max(1, min(n_components, min(centered.shape) - 1))
        u, s, _ = np.linalg.svd(centered, full_matrices=False)
        gene_pca = u[:, :k] * s[:k]  # (G, k)
        # One shift per single target (the first label of a target, e.g. A before A+ctrl).
        sets = perturbation_sets(targets, control_label)
        singles = {}
        for p, label in enumerate(targets):
            if len(sets[label]) == 1:
                singles.setdefault(sets[label][0], p)
        # The linear map is fitted on the singles whose target has PCA coordinates.
        fit = [(genespace.index(t), p) for t, p in singles.items() if t in genespace]
        ridge_weights = np.zeros((k, k))
        if fit:
            pert_pca = gene_pca[[g for g, _ in fit]]  # (P, k)
            left = np.linalg.solve(gene_pca.T @ gene_pca + ridge * np.eye(k), gene_pca.T)  # (k, G)
            right = pert_pca @ np.linalg.inv(pert_pca.T @ pert_pca + ridge * np.eye(k))  # (P, k)
            ridge_weights = left @ centered[:, [p for _, p in fit]] @ right
        return cls(
            genespace, mean_shift, gene_pca, ridge_weights, list(singles),
            shifts[:, list(singles.values())].T, control_label,
        )

    def shift(self, name: str, target: str) -> np.ndarray:
        """The ``(G,)`` shift a baseline adds to control cells for the perturbation ``target``."""
        shifts = {
            "no_change": self._no_change, "perturbation_mean": self._mean, "linear": self._linear,
            "additive": self._additive,
        }
        if name not in shifts:
            raise InputError(f"unknown baseline '{name}'; known: {', '.join(BASELINES)}.")
        return shifts[name](sorted(parse_perturbation(target, self.control_label)))

    def _no_change(self, genes: list[str]) -> np.ndarray:
        return np.zeros_like(self.mean_shift)

    def _mean(self, genes: list[str]) -> np.ndarray:
        return self.mean_shift

    def _linear(self, genes: list[str]) -> np.ndarray:
        rows = [self.genespace.index(g) for g in genes if g in self.genespace]
        return self.gene_pca @ self.ridge_weights @ self.gene_pca[rows].sum(0) + self.mean_shift

    def _additive(self, genes: list[str]) -> np.ndarray:
        fallback = self.single_shifts.mean(0) if len(self.single_targets) else self.mean_shift
        known = {t: i for i, t in enumerate(self.single_targets)}
        shifts = (self.single_shifts[known[g]] if g in known else fallback for g in genes)
        return sum(shifts, np.zeros_like(self.mean_shift))

    def predictor(self, name: str) -> Callable[[np.ndarray, str], np.ndarray]:
        """``(controls (n, G), target) -> predicted cells (n, G)`` of one baseline."""
        return lambda controls, target: np.clip(controls + self.shift(name, target), 0.0, None)

    def save(self, path: str | Path) -> None:
        np.savez(
            path, genes=np.array(self.genespace.names), mean_shift=self.mean_shift,
            gene_pca=self.gene_pca, ridge_weights=self.ridge_weights,
            single_targets=np.array(self.single_targets, dtype=str), single_shifts=self.single_shifts,
            control_label=np.array(self.control_label),
        )

    @classmethod
    def load(cls, path: str | Path) -> Baselines:
        """Read :meth:`save`'s file; files of cellsmith <= 0.2 (no singles) give an ``additive``
        baseline equal to ``perturbation_mean``."""
        data = np.load(path)
        shifts = data["single_shifts"] if "single_shifts" in data else np.zeros((0, data["mean_shift"].size))
        return cls(
            GeneSpace(data["genes"].tolist()), data["mean_shift"], data["gene_pca"], data["ridge_weights"],
            data["single_targets"].tolist() if "single_targets" in data else [], shifts,
            str(data["control_label"]) if "control_label" in data else "non-targeting",
        )
