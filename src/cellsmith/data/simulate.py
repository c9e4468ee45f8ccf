"""Realistic raw-count single-cell and bulk data with known truth: the demo and test data.

The single-cell model has the structure real data have and that cellsmith's models rely on:

- per-gene mean expression spanning orders of magnitude (log-normal) and negative-binomial
  noise with gene-specific dispersion;
- per-cell library sizes varying about tenfold;
- a set of genes that are zero in every cell;
- gene programs (co-expression modules): each cell has a random activity per program, and each
  member gene follows it with its own loading, so gene-gene co-expression is learnable from
  unperturbed cells;
- cell types (marker genes and program shifts), donors (multiplicative per-gene effects) and
  timepoints (a graded program, 0 at the first timepoint, 1 at the last);
- perturbations: the target gene is knocked down and the program it belongs to is shifted, so
  the downstream response of a target follows its co-expression partners;
- double perturbations ``A+B``: both targets knocked down, their effects added, plus an
  interaction term ``c_AB x (effect_A + effect_B)`` on the other genes with ``c_AB`` drawn per
  pair (on average negative: buffering, as most doubles of Norman et al. 2019 are sub-additive;
  the spread around that mean is what no model can know for an unseen pair);
- targets outside the measured genes: a share of the targets is flagged ``var["measured"] =
  False`` (their genes are simulated and shape co-expression, as in pretraining data that
  measure every gene, but a screen with ``adata[:, adata.var["measured"]]`` does not measure them).

All true effects are stored in ``adata.uns["simulation"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

# membership_matrix lives in pseudobulk; the name stays importable here for one release
# (cellsmith 0.1 imported it from this module).
from cellsmith.data.pseudobulk import membership_matrix, pseudobulk  # noqa: F401
from cellsmith.errors import InputError

CONTROL_LABEL = "non-targeting"


def _names(spec: int | Sequence[str], prefix: str) -> list[str]:
    if isinstance(spec, int):
        return [f"{prefix}{i}" for i in range(spec)]
    return [str(s) for s in spec]


def gene_names(n_genes: int) -> list[str]:
    """Names of simulated genes: ``GENE00000``, ``GENE00001``, ..."""
    return [f"GENE{i:05d}" for i in range(n_genes)]


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """NB counts as a Gamma-Poisson mixture (mean ``mean``, inverse dispersion ``theta``)."""
    rate = rng.gamma(shape=theta, scale=mean / theta)
    return rng.poisson(rate)


def singlecell(
    n_cells: int = 2000,
    n_genes: int = 1000,
    *,
    cell_types: int | Sequence[str] = 5,
    donors: int | Sequence[str] = 2,
    timepoints: int | Sequence[str] = (),
    perturbations: int | Sequence[str] = 0,
    control_fraction: float = 0.25,
    n_programs: int | None = None,
    always_zero_fraction: float = 0.05,
    median_library_size: float = 3000.0,
    knockdown: float = 0.1,
    combinations: int = 0,
    interaction: float = 0.3,
    unmeasured_targets: float = 0.0,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate single cells of integer counts with known effects.

    Parameters
    ----------
    n_cells, n_genes
        Shape of the result.
    cell_types, donors, timepoints
        A number of levels (named ``type0``, ``donor0``, ``t0``, ...) or the level names.
        Timepoints are ordered: the graded timepoint program grows linearly from the first to
        the last level. No ``timepoint`` column when empty.
    perturbations
        A number of target genes (chosen among expressed program genes) or their names (which
        must be simulated gene names). No ``target_gene`` column when 0.
    control_fraction
        Share of cells labelled ``non-targeting`` when perturbations are simulated.
    n_programs
        Number of co-expression programs (default ``max(8, n_genes // 40)``).
    always_zero_fraction
        Share of genes that are zero in every cell.
    median_library_size
        Median total counts per cell.
    knockdown
        Remaining expression of a target gene in its perturbed cells.
    combinations
        Number of double perturbations ``A+B``, pairs of distinct targets drawn at random; their
        cells are drawn like those of a single target.
    interaction
        Per pair, ``c_AB ~ Normal(-interaction, interaction / 2)``: the double's effect on the
        genes other than its targets is ``(1 + c_AB) x (effect_A + effect_B)``.
    unmeasured_targets
        Share of the targets (at least one when > 0) flagged ``False`` in ``var["measured"]``.
    seed
        Random seed: the same seed gives the same data.

    Returns
    -------
    AnnData
        ``X``: CSR float32 integer counts; obs ``cell_type``, ``donor_id`` and, when requested,
        ``timepoint`` and ``target_gene`` (``A+B`` for doubles); ``var["measured"]`` when
        ``unmeasured_targets`` > 0; ``uns["simulation"]`` the true effects
        (``perturbation_lfc`` one row per label of ``perturbations``, then one per double).
    """
    if n_cells < 1 or n_genes < 10:
        raise InputError(f"simulate at least 1 cell and 10 genes, got {n_cells} x {n_genes}.")
    rng = np.random.default_rng(seed)
    genes = gene_names(n_genes)
    types, donor_names, times = _names(cell_types, "type"), _names(donors, "donor"), _names(timepoints, "t")
    n_programs = n_programs or max(8, n_genes // 40)

    # Genes: base expression over ~4 orders of magnitude, dispersion, always-zero set.
    log_base = rng.normal(0.0, 1.6, n_genes)
    theta = rng.uniform(2.0, 20.0, n_genes)
    n_zero = int(round(always_zero_fraction * n_genes))
    always_zero = np.sort(rng.choice(n_genes, n_zero, replace=False))
    expressed = np.setdiff1d(np.arange(n_genes), always_zero)

    # Programs: 70% of expressed genes belong to one program each, with a loading.
    program_of = np.full(n_genes, -1)
    members = rng.choice(expressed, int(0.7 * expressed.size), replace=False)
    program_of[members] = rng.integers(0, n_programs, members.size)
    loading = np.where(program_of >= 0, rng.uniform(0.6, 1.4, n_genes), 0.0)
    program_matrix = np.zeros((n_programs, n_genes))
    program_matrix[program_of[members], members] = loading[members]

    # Cell types: markers and a program shift per type.
    type_lfc = np.zeros((len(types), n_genes))
    for k in range(len(types)):
        markers = rng.choice(expressed, max(1, n_genes // 20), replace=False)
        type_lfc[k, markers] = rng.normal(0.0, 1.5, markers.size)
        type_lfc[k] += rng.normal(0.0, 0.8, n_programs) @ program_matrix
    donor_lfc = rng.normal(0.0, 0.2, (len(donor_names), n_genes))
    time_genes = rng.choice(expressed, max(1, n_genes // 20), replace=False)
    time_direction = np.zeros(n_genes)
    time_direction[time_genes] = rng.normal(0.0, 1.2, time_genes.size)

    # Perturbations: a target gene is knocked down and its program shifted.
    if isinstance(perturbations, int):
        pool = members[np.argsort(-log_base[members])][: max(perturbations * 3, perturbations)]
        targets = [genes[i] for i in np.sort(rng.choice(pool, perturbations, replace=False))]
    else:
        targets = [str(t) for t in perturbations]
        unknown = [t for t in targets if t not in set(genes)]
        if unknown:
            raise InputError(f"perturbation targets {unknown[:5]} are not simulated gene names (GENE00000...).")
    target_index = np.array([genes.index(t) for t in targets], dtype=int)
    perturbation_lfc = np.zeros((len(targets), n_genes))
    for p, g in enumerate(target_index):
        if program_of[g] >= 0:
            perturbation_lfc[p] = -rng.uniform(0.8, 1.6) * program_matrix[program_of[g]]
        perturbation_lfc[p, g] = np.log(knockdown)

    labels_of_effects, perturbation_lfc, coefficients = _combinations(
        rng, targets, target_index, perturbation_lfc, combinations, interaction
    )

    # Cells.
    cell_type = rng.integers(0, len(types), n_cells)
    donor = rng.integers(0, len(donor_names), n_cells)
    activity = rng.normal(0.0, 0.5, (n_cells, n_programs))
    log_mean = log_base + type_lfc[cell_type] + donor_lfc[donor] + activity @ program_matrix
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([types[i] for i in cell_type], categories=types),
            "donor_id": pd.Categorical([donor_names[i] for i in donor], categories=donor_names),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    if times:
        time = rng.integers(0, len(times), n_cells)
        level = time / max(1, len(times) - 1)
        log_mean += level[:, None] * time_direction
        obs["timepoint"] = pd.Categorical([times[i] for i in time], categories=times)
    if targets:
        is_control = rng.random(n_cells) < control_fraction
        which = rng.integers(0, len(labels_of_effects), n_cells)
        log_mean += np.where(is_control[:, None], 0.0, perturbation_lfc[which])
        labels = np.where(is_control, CONTROL_LABEL, np.array(labels_of_effects, dtype=object)[which])
        obs["target_gene"] = pd.Categorical(labels, categories=[CONTROL_LABEL, *labels_of_effects])

    proportions = np.exp(log_mean)
    proportions[:, always_zero] = 0.0
    proportions /= proportions.sum(axis=1, keepdims=True)
    library = median_library_size * np.exp(rng.normal(0.0, 0.6, n_cells))
    counts = _negative_binomial(rng, proportions * library[:, None], theta).astype(np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))
    unmeasured: list[str] = []
    if unmeasured_targets > 0 and targets:
        n_unmeasured = max(1, int(round(unmeasured_targets * len(targets))))
        unmeasured = sorted(rng.choice(targets, min(n_unmeasured, len(targets)), replace=False).tolist())
        adata.var["measured"] = ~adata.var_names.isin(unmeasured)
    adata.uns["simulation"] = {
        "seed": seed,
        "log_base": log_base,
        "theta": theta,
        "always_zero_genes": [genes[i] for i in always_zero],
        "program_of_gene": program_of,
        "cell_types": types,
        "cell_type_lfc": type_lfc,
        "donors": donor_names,
        "donor_lfc": donor_lfc,
        "timepoints": times,
        "timepoint_direction": time_direction,
        "targets": targets,
        "perturbation_lfc": perturbation_lfc,
        "perturbation_labels": labels_of_effects,
        "interaction_coefficients": coefficients,
        "unmeasured_targets": unmeasured,
        "control_label": CONTROL_LABEL,
    }
    return adata


def _combinations(
    rng: np.random.Generator,
    targets: list[str],
    target_index: np.ndarray,
    single_lfc: np.ndarray,
    n_combinations: int,
    interaction: float,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels and log-fold effects of the singles followed by ``n_combinations`` doubles, and
    the interaction coefficient of each double."""
    pairs = [(a, b) for a in range(len(targets)) for b in range(a + 1, len(targets))]
    if n_combinations > len(pairs):
        raise InputError(
            f"{n_combinations} double perturbations asked for, but {len(targets)} targets give {len(pairs)} pairs."
        )
    if n_combinations == 0:
        return list(targets), single_lfc, np.zeros(0)
    chosen = [pairs[i] for i in np.sort(rng.choice(len(pairs), n_combinations, replace=False))]
    coefficients = rng.normal(-interaction, interaction / 2, n_combinations)
    doubles = np.empty((n_combinations, single_lfc.shape[1]))
    for k, (a, b) in enumerate(chosen):
        additive = single_lfc[a] + single_lfc[b]
        doubles[k] = (1.0 + coefficients[k]) * additive
        # The targets themselves are knocked down: no interaction on their own expression.
        both = target_index[[a, b]]
        doubles[k, both] = additive[both]
    labels = [*targets, *(f"{targets[a]}+{targets[b]}" for a, b in chosen)]
    return labels, np.vstack([single_lfc, doubles]), coefficients


def bulk(
    reference: ad.AnnData,
    n_samples: int,
    *,
    cell_type_key: str = "cell_type",
    cells_per_sample: int = 500,
    alpha: float = 1.0,
    counts_layer: str | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """Bulk counts as sums of sampled reference cells, with the exact proportions as truth.

    Proportions are drawn from a Dirichlet(``alpha``) per sample; cells are drawn with
    replacement within each type. This is :func:`cellsmith.data.pseudobulk.pseudobulk` with
    count output (the one sampler), with samples named ``bulk0``, ``bulk1``, ...

    Returns
    -------
    AnnData
        Samples x genes of summed counts; ``obsm["proportions"]`` (DataFrame, one column per
        cell type) the fraction of cells drawn per type.
    """
    out = pseudobulk(
        reference,
        n_samples,
        cell_type_key=cell_type_key,
        counts_layer=counts_layer,
        cells_per_sample=cells_per_sample,
        alpha=alpha,
        scale="counts",
        seed=seed,
    )
    out.obs_names = [f"bulk{i}" for i in range(n_samples)]
    return out
