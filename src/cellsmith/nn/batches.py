"""Sparse row batches to dense tensors on the training device."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def dense_batch(rows: sp.csr_matrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, G) float32 dense tensor of a CSR batch, densified on ``device``.

    Only the batch's non-zeros cross to the device (as a torch sparse CSR tensor), where it is
    densified: the host never holds more than the sparse batch.
    """
    rows = sp.csr_matrix(rows, dtype=np.float32)
    device = torch.device(device)
    if device.type == "cpu":
        return torch.from_numpy(rows.toarray())
    sparse = torch.sparse_csr_tensor(
        torch.from_numpy(rows.indptr.astype(np.int64)),
        torch.from_numpy(rows.indices.astype(np.int64)),
        torch.from_numpy(rows.data),
        size=rows.shape,
    )
    return sparse.to(device, non_blocking=True).to_dense()
