"""scGPT's input, step for step as ``scgpt.tasks.embed_data`` builds it.

1. genes outside the vocabulary are dropped (the caller maps names to token ids);
2. normalize_total to 1e4 and log1p (cellsmith's :func:`cellsmith.data.normalize.log1p_normalize`);
3. per-cell binning of the non-zero values into ``n_bins - 1`` quantile bins (:func:`bin_rows`,
   bins 1 .. 50; 0 means "not expressed");
4. a cell whose expressed genes exceed ``max_length - 1`` keeps a random subset of them
   (:func:`choose_genes`; scGPT's ``DataCollator(sampling=True)``);
5. the sequence is ``<cls>`` (value ``pad_value``) then the expressed genes, padded with
   ``<pad>`` / ``pad_value`` to the longest cell of the batch (:func:`tokenize`).

``embed_data`` itself bins raw counts; a per-cell scale factor and log1p are monotone per cell,
so they leave the quantile bins unchanged (the fixture test checks both give the same bins).
Ties between equal values (frequent in counts) are broken at random, as in scGPT: the draws
come from a legacy ``np.random.RandomState`` in scGPT's order (one uniform per non-zero value,
cell after cell), so a seed reproduces scGPT's own bins under ``np.random.seed``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

N_BINS = 51


def bin_nonzero(values: np.ndarray, n_bins: int, rng: np.random.RandomState) -> np.ndarray:
    """Bins 1 .. ``n_bins - 1`` of one cell's non-zero values (1-d, all > 0).

    Cut points are the ``linspace(0, 1, n_bins - 1)`` quantiles of the values; a value between
    cut points gets the bin above the lower one, a value equal to several cut points (ties) a
    uniformly random one of the bins they span.
    """
    edges = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    left = np.digitize(values, edges)
    right = np.digitize(values, edges, right=True)
    # rng.rand: the legacy stream scGPT draws from, so that a seed reproduces its tie-breaking
    return np.ceil(rng.rand(len(values)) * (right - left) + left).astype(np.int64)


def bin_rows(rows: np.ndarray | sp.spmatrix, n_bins: int = N_BINS, *, rng: np.random.RandomState) -> np.ndarray:
    """Per-cell binned values (dense int64, rows x genes; zeros stay 0), cell after cell."""
    rows = sp.csr_matrix(rows)
    out = np.zeros(rows.shape, dtype=np.int64)
    for i in range(rows.shape[0]):
        start, stop = rows.indptr[i], rows.indptr[i + 1]
        data = rows.data[start:stop]
        kept = data != 0
        if kept.any():
            out[i, rows.indices[start:stop][kept]] = bin_nonzero(data[kept], n_bins, rng)
    return out


def choose_genes(binned: np.ndarray, n_genes: int, rng: np.random.Generator) -> np.ndarray:
    """``binned`` with at most ``n_genes`` expressed genes per cell: a uniformly random subset
    of a cell's expressed genes where it has more (the others set to 0, i.e. left out)."""
    out = binned.copy()
    for i in np.flatnonzero((binned > 0).sum(1) > n_genes):
        expressed = np.flatnonzero(binned[i])
        out[i, rng.choice(expressed, expressed.size - n_genes, replace=False)] = 0
    return out


def tokenize(
    bins: torch.Tensor, gene_ids: torch.Tensor, *, cls_id: int, pad_id: int, pad_value: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binned cells (B, G) over genes of token ids ``gene_ids`` (G,) -> model input.

    Returns ``ids`` (B, L) long, ``values`` (B, L) float and ``padding`` (B, L) bool, with
    ``L = 1 + the most expressed genes of a cell in the batch``: ``<cls>`` first, then each
    cell's expressed genes in column order, then padding.
    """
    expressed = bins > 0  # (B, G)
    n = int(expressed.sum(1).max()) if bins.shape[0] else 0
    # a stable sort puts each cell's expressed columns first, in column order
    order = torch.sort((~expressed).to(torch.uint8), dim=1, stable=True).indices[:, :n]  # (B, n)
    present = expressed.gather(1, order)
    ids = torch.where(present, gene_ids[order], pad_id)
    values = torch.where(present, bins.gather(1, order).float(), pad_value)
    first = torch.ones(bins.shape[0], 1, dtype=torch.bool, device=bins.device)
    ids = torch.cat([torch.full_like(first, cls_id, dtype=torch.long), ids], dim=1)
    values = torch.cat([torch.full_like(first, pad_value, dtype=torch.float32), values], dim=1)
    return ids, values, torch.cat([~first, ~present], dim=1)
