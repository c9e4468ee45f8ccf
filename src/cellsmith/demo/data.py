"""Demo section of the data contract: audit verdicts and a cross-dataset gene space."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellsmith.data import audit, cross_dataset_hvg, normalize
from cellsmith.datasets import simulated_pbmc
from cellsmith.errors import ScaleError
from cellsmith.report import Report


def demo_section(out_dir: Path, *, seed: int = 0) -> Report:
    """Audit one simulated dataset on four scales and select genes across two datasets."""
    import matplotlib.pyplot as plt

    from cellsmith.data import require_counts

    report = Report("Data contract: audit and gene space")
    cells = simulated_pbmc(n_cells=1000, n_genes=800, seed=seed)
    counts = cells.X
    lognorm = normalize.log1p_normalize(counts)
    variants = {
        "raw counts": counts,
        "normalize_total (CP10k)": normalize.normalize_total(counts),
        "log1p(CP10k)": lognorm,
        "scaled (z-score)": (lognorm.toarray() - lognorm.toarray().mean(0)) / (lognorm.toarray().std(0) + 1e-8),
    }
    rows = []
    for name, x in variants.items():
        found = audit(ad.AnnData(X=x, var=cells.var)).matrices["X"]
        try:
            require_counts(ad.AnnData(X=x, var=cells.var))
            accepted = "accepted"
        except ScaleError:
            accepted = "refused (ScaleError)"
        rows.append({"input": name, "scale": found.scale, "evidence": found.verdict, "require_counts": accepted})
    table = pd.DataFrame(rows).set_index("input")
    report.text("The audit classifies each matrix; only raw counts pass require_counts.")
    report.table(table)
    table.to_csv(out_dir / "audit_verdicts.csv")

    other = simulated_pbmc(n_cells=600, n_genes=800, seed=seed + 1)
    selection = cross_dataset_hvg(
        {"pbmc_a": cells, "pbmc_b": other}, n_top=200, priority_genes=["GENE00001", "GENE00002"]
    )
    selection.write(out_dir / "hvg")
    report.text(
        f"Cross-dataset HVG: {len(selection.genespace)} genes (digest {selection.genespace.digest}); "
        f"priority genes kept: {', '.join(selection.priority_genes_included) or 'none'}; missing: "
        f"{', '.join(selection.priority_genes_missing) or 'none'}."
    )
    library = np.asarray(counts.sum(axis=1)).ravel()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(np.log10(library), bins=40, color="#4a7")
    ax.set_xlabel("log10 library size")
    ax.set_ylabel("cells")
    report.figure(fig, caption="Per-cell library sizes of the simulated cells.", save_png=out_dir / "library_sizes.png")
    return report
