"""The data contract: read, audit, require counts, align genes, normalize, simulate."""

from cellsmith.data import normalize, simulate
from cellsmith.data.audit import (
    AuditReport,
    MatrixAudit,
    audit,
    audit_matrix,
    recover_counts,
    require_counts,
    require_linear,
)
from cellsmith.data.genespace import GeneSpace
from cellsmith.data.hvg import HVGSelection, cross_dataset_hvg
from cellsmith.data.io import read, read_bulk
from cellsmith.data.labels import is_control, parse_perturbation, perturbation_sets, perturbed_genes

__all__ = [
    "AuditReport",
    "GeneSpace",
    "HVGSelection",
    "MatrixAudit",
    "audit",
    "audit_matrix",
    "cross_dataset_hvg",
    "is_control",
    "normalize",
    "parse_perturbation",
    "perturbation_sets",
    "perturbed_genes",
    "read",
    "read_bulk",
    "recover_counts",
    "require_counts",
    "require_linear",
    "simulate",
]
