import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellsmith.data import simulate
from cellsmith.data.rows import count_rows, read_backed, shuffled_row_batches
from cellsmith.errors import InputError, ScaleError
from cellsmith.nn.batches import dense_batch


@pytest.fixture(scope="module")
def cells_file(tmp_path_factory):
    cells = simulate.singlecell(500, 40, cell_types=2, donors=1, seed=0)
    cells.X = sp.csr_matrix(cells.X)
    path = tmp_path_factory.mktemp("rows") / "cells.h5ad"
    cells.write_h5ad(path)
    return path


def test_backed_and_in_memory_rows_agree(cells_file):
    memory = count_rows(ad.read_h5ad(cells_file))
    backed = count_rows(read_backed(cells_file))
    assert backed.backed and not memory.backed and backed.shape == memory.shape == (500, 40)
    np.testing.assert_array_equal(backed.row_sums(block_rows=64), memory.row_sums())
    rows = np.array([7, 3, 3, 499, 0])
    np.testing.assert_array_equal(backed.take(rows).toarray(), memory.take(rows).toarray())
    columns = np.array([5, 1, 0])
    np.testing.assert_array_equal(count_rows(ad.read_h5ad(cells_file), columns=columns).read(0, 4).toarray(),
                                  memory.read(0, 4).toarray()[:, columns])


@pytest.mark.parametrize("backed", [False, True])
def test_an_epoch_visits_every_selected_row_once_and_is_seeded(cells_file, backed):
    counts = count_rows(read_backed(cells_file) if backed else ad.read_h5ad(cells_file))
    memory = count_rows(ad.read_h5ad(cells_file))
    subset = np.arange(0, 500, 3)

    def epoch(seed, number):
        batches = list(
            shuffled_row_batches(counts, subset, batch_size=32, seed=seed, epoch=number, block_rows=50, buffer_blocks=3)
        )
        return np.concatenate([index for index, _ in batches]), batches

    order, batches = epoch(0, 0)
    assert sorted(order.tolist()) == subset.tolist()
    for index, block in batches:
        np.testing.assert_array_equal(block.toarray(), memory.take(index).toarray())
    np.testing.assert_array_equal(epoch(0, 0)[0], order)
    assert not np.array_equal(epoch(0, 1)[0], order)


def test_backed_needs_counts_in_x(cells_file, tmp_path):
    adata = read_backed(cells_file)
    with pytest.raises(InputError, match="only X is read from disk"):
        count_rows(adata, layer="counts")
    logged = ad.read_h5ad(cells_file)
    logged.X = logged.X.log1p()
    logged.write_h5ad(tmp_path / "log.h5ad")
    with pytest.raises(ScaleError):
        count_rows(read_backed(tmp_path / "log.h5ad"))


def test_dense_batch_matches_toarray():
    block = sp.random(5, 7, density=0.3, format="csr", dtype=np.float32, random_state=0)
    np.testing.assert_array_equal(dense_batch(block).numpy(), block.toarray())
    if torch.cuda.is_available():
        np.testing.assert_array_equal(dense_batch(block, "cuda").cpu().numpy(), block.toarray())
