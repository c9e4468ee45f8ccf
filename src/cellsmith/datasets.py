"""Built-in simulated datasets (the demo defaults) and loaders of the public datasets.

The public datasets are read from a local folder: ``data_dir`` if given, else the environment
variable ``CELLSMITH_DATA_DIR``, else ``../shared/data`` relative to the working directory.
Nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import anndata as ad

from cellsmith.data import simulate
from cellsmith.data.io import read
from cellsmith.errors import DatasetNotFoundError, InputError


def simulated_pbmc(n_cells: int = 2000, n_genes: int = 1000, *, seed: int = 0) -> ad.AnnData:
    """Simulated PBMC-like cells: 5 cell types, 3 donors, 3 timepoints, always-zero genes."""
    return simulate.singlecell(
        n_cells,
        n_genes,
        cell_types=("B", "CD4 T", "CD8 T", "NK", "Monocyte"),
        donors=("donor_A", "donor_B", "donor_C"),
        timepoints=("0h", "6h", "24h"),
        seed=seed,
    )


def simulated_perturbseq(
    n_cells: int = 6000, n_genes: int = 500, *, n_targets: int = 60, seed: int = 0
) -> ad.AnnData:
    """A simulated CRISPR screen: ``n_targets`` knockouts plus ``non-targeting`` controls.

    Downstream responses follow the co-expression programs of the targets, so they are
    learnable from unperturbed cells.
    """
    return simulate.singlecell(
        n_cells,
        n_genes,
        cell_types=("cell_line",),
        donors=("batch1", "batch2"),
        perturbations=n_targets,
        control_fraction=0.15,
        seed=seed,
    )


@dataclass(frozen=True)
class PublicDataset:
    """A public dataset file in the shared data folder and its documented keys."""

    filename: str
    description: str
    keys: dict[str, str]


PUBLIC_DATASETS: dict[str, PublicDataset] = {
    "pbmc_sorted": PublicDataset(
        "pbmc_sorted_zheng2017.h5ad",
        "FACS-sorted PBMC populations (Zheng 2017), raw UMI counts",
        {"cell_type": "obs", "cell_type_fine": "obs"},
    ),
    "pbmc_donor_a": PublicDataset(
        "pbmc_frozen_donorA_zheng2017.h5ad",
        "frozen PBMCs of one donor (Zheng 2017), raw UMI counts, unlabelled",
        {"donor_id": "obs"},
    ),
    "kang2018": PublicDataset(
        "kang2018_ifnb_pbmc_subset.h5ad",
        "PBMCs control vs IFN-beta 6 h (Kang 2018), raw UMI counts",
        {"condition": "obs"},
    ),
    "papalexi2021": PublicDataset(
        "papalexi2021_thp1_eccite.h5ad",
        "THP-1 CRISPR knockouts (Papalexi 2021), raw UMI counts, 299 genes",
        {"target_gene": "obs", "guide_id": "obs", "guide_umis": "obs", "bio_rep": "obs"},
    ),
    "hoek2015_bulk": PublicDataset(
        "hoek2015_pbmc_bulk.h5ad",
        "PBMC bulk RNA-seq raw read counts with flow-cytometry fractions (Hoek 2015)",
        {"flow_fractions": "obsm"},
    ),
    "newman2019_blood_bulk": PublicDataset(
        "GSE127813_whole_blood_bulk.h5ad",
        "whole-blood bulk RNA-seq (Newman 2019) with flow-cytometry fractions",
        {"flow_fractions": "obsm"},
    ),
}


def data_dir(path: str | Path | None = None) -> Path:
    """The folder that holds the public datasets (see the module docstring)."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("CELLSMITH_DATA_DIR", Path("..") / "shared" / "data"))


def dataset_path(name: str, directory: str | Path | None = None) -> Path:
    """Path of a public dataset file; DatasetNotFoundError when it is absent."""
    if name not in PUBLIC_DATASETS:
        raise InputError(f"unknown dataset '{name}'; known: {', '.join(PUBLIC_DATASETS)}.")
    path = data_dir(directory) / PUBLIC_DATASETS[name].filename
    if not path.is_file():
        raise DatasetNotFoundError(
            f"dataset '{name}' ({PUBLIC_DATASETS[name].description}) is not at {path}; put "
            f"{PUBLIC_DATASETS[name].filename} there, pass data_dir=, or set CELLSMITH_DATA_DIR."
        )
    return path


def load(name: str, directory: str | Path | None = None) -> ad.AnnData:
    """Read a public dataset by name (keys: :data:`PUBLIC_DATASETS`)."""
    return read(dataset_path(name, directory))
