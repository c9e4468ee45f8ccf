"""ConditionalSCVI on sparse and backed data: counts stay CSR, batches are densified when taken,
and ``--backed`` equals in-memory results up to the shuffling order."""

from __future__ import annotations

import functools

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from cellsmith.cli import app
from cellsmith.data import simulate
from cellsmith.data.rows import count_rows, read_backed, shuffled_row_batches
from cellsmith.errors import InputError
from cellsmith.scvi import ConditionalSCVI, SCVIConfig
from cellsmith.scvi import batches as scvi_batches
from cellsmith.scvi import model as scvi_model
from cellsmith.scvi.batches import BlockBatches, full_batches

FAST = dict(
    max_epochs=4, n_hidden=32, n_latent=4, batch_size=32, patience=0, kl_warmup_epochs=2,
    accelerator="cpu", progress_bar=False, num_threads=1,
)
#: Row blocks and buffers small enough that backed training on a few hundred cells reads several.
SMALL_BLOCKS = dict(block_rows=40, buffer_blocks=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    path = tmp_path_factory.mktemp("scvi_scale")
    cells = simulate.singlecell(
        500, 80, cell_types=2, donors=2, timepoints=("0h", "24h"), always_zero_fraction=0.05, seed=5
    )
    cells.X = sp.csr_matrix(cells.X)
    cells[:400].copy().write_h5ad(path / "train.h5ad")
    cells[400:].copy().write_h5ad(path / "held_out.h5ad")
    return path


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(scvi_batches, "shuffled_row_batches", functools.partial(shuffled_row_batches, **SMALL_BLOCKS))


@pytest.fixture(scope="module")
def trained(files):
    return ConditionalSCVI(SCVIConfig(**FAST)).train(ad.read_h5ad(files / "train.h5ad"), covariate_keys=["timepoint"])


def test_inference_on_a_backed_file_equals_in_memory(trained, files):
    memory, backed = ad.read_h5ad(files / "held_out.h5ad"), read_backed(files / "held_out.h5ad")
    np.testing.assert_array_equal(trained.get_latent(backed), trained.get_latent(memory))
    np.testing.assert_array_equal(trained.log_likelihood(backed), trained.log_likelihood(memory))
    for name, value in trained.reconstruct(backed).items():
        np.testing.assert_array_equal(value, trained.reconstruct(memory)[name], err_msg=name)
    swapped = {"timepoint": "24h"}
    np.testing.assert_array_equal(trained.predict(backed, set=swapped).X, trained.predict(memory, set=swapped).X)


def test_backed_training_matches_in_memory_up_to_shuffling(trained, files, small_blocks):
    backed = ConditionalSCVI(SCVIConfig(**FAST)).train(read_backed(files / "train.h5ad"), covariate_keys=["timepoint"])
    assert backed.setup == trained.setup
    for part in ("train", "validation"):
        np.testing.assert_array_equal(backed.split[part], trained.split[part])
    assert list(backed.history["epoch"]) == list(trained.history["epoch"])
    held_out = ad.read_h5ad(files / "held_out.h5ad")
    nll = {name: float(-m.log_likelihood(held_out).mean()) for name, m in (("memory", trained), ("backed", backed))}
    assert abs(nll["backed"] - nll["memory"]) / nll["memory"] < 0.02, nll


def test_no_path_densifies_more_than_a_batch(files, monkeypatch, small_blocks):
    limit = FAST["batch_size"]
    monkeypatch.setattr(scvi_model, "_EVAL_BATCH", limit)
    for cls in (sp.csr_matrix, sp.csr_array):
        original = cls.toarray

        def guarded(self, *args, original=original, **kwargs):
            if self.shape[0] > limit:
                raise AssertionError(f"densified {self.shape[0]} rows at once (batch size {limit})")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "toarray", guarded)
    for adata in (ad.read_h5ad(files / "train.h5ad"), read_backed(files / "train.h5ad")):
        model = ConditionalSCVI(SCVIConfig(**{**FAST, "max_epochs": 1})).train(adata, covariate_keys=["timepoint"])
        assert model.get_latent(adata).shape == (400, FAST["n_latent"])
        assert np.isfinite(model.log_likelihood(adata)).all()
        assert model.reconstruct(adata)["mean"].shape == (400, 80)
        assert model.predict(adata, set={"timepoint": "0h"}).n_obs == 400
    with pytest.raises(AssertionError, match="densified 400 rows"):
        sp.csr_matrix(np.ones((400, 3))).toarray()


def test_perturbation_mode_trains_in_memory_and_predicts_from_a_backed_file(tmp_path):
    screen = simulate.singlecell(120, 30, cell_types=1, donors=2, perturbations=2, control_fraction=0.4, seed=1)
    screen.X = sp.csr_matrix(screen.X)
    screen.write_h5ad(tmp_path / "screen.h5ad")
    keys = dict(perturbation_key="target_gene", control_label="non-targeting")
    with pytest.raises(InputError, match="drop --backed"):
        ConditionalSCVI(SCVIConfig(**FAST)).train(read_backed(tmp_path / "screen.h5ad"), **keys)
    model = ConditionalSCVI(SCVIConfig(**{**FAST, "max_epochs": 1})).train(screen, **keys)
    backed = read_backed(tmp_path / "screen.h5ad")
    np.testing.assert_array_equal(model.matched_sources(backed), model.matched_sources(screen))
    np.testing.assert_array_equal(model.reconstruct(backed)["mean"], model.reconstruct(screen)["mean"])


def test_block_batches_are_full_cover_the_rows_and_shard_by_rank(files, small_blocks, monkeypatch):
    counts = count_rows(read_backed(files / "train.h5ad"))
    rows = np.arange(3, 400, 2)  # 199 rows over 10 blocks
    batches = BlockBatches(counts, rows, batch_size=32, seed=4)
    batches.set_epoch(1)
    whole = list(batches)
    assert len(whole) == len(batches) == 7 and [t.numel() for t, *_ in whole] == [32] * 6 + [7]
    seen = np.concatenate([t.numpy() for t, *_ in whole])
    assert sorted(seen) == list(rows) and not np.array_equal(seen, rows)
    memory = count_rows(ad.read_h5ad(files / "train.h5ad"))
    for targets, sources, x, source_x in whole:
        assert sources is targets and source_x is None
        np.testing.assert_array_equal(x.toarray(), memory.take(targets.numpy()).toarray())
    for rank in (0, 1):
        monkeypatch.setattr(scvi_batches, "process_rank", lambda rank=rank: (rank, 2))
        shares = list(batches)
        assert len(shares) == 7
        for (share, *_), (batch, *_) in zip(shares, whole, strict=True):
            assert np.array_equal(share.numpy(), batch.numpy()[rank::2])


def test_full_batches_recut_parts_in_order():
    bounds = ((0, 5), (5, 6), (6, 17))
    parts = [(np.arange(a, b), sp.csr_matrix(np.arange(a, b, dtype=np.float32)[:, None])) for a, b in bounds]
    out = list(full_batches(iter(parts), 4))
    assert [rows.tolist() for rows, _ in out] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16]]
    assert all(np.array_equal(x.toarray().ravel(), rows) for rows, x in out)


def test_cli_backed_train_and_bounded_reconstruct(files, tmp_path):
    runner = CliRunner()
    (tmp_path / "cfg.yaml").write_text("max_epochs: 1\nn_hidden: 16\nn_latent: 3\npatience: 0\nprogress_bar: false\n")
    data = str(files / "train.h5ad")
    result = runner.invoke(
        app,
        [
            "scvi", "train", "--data", data, "--backed", "--config", str(tmp_path / "cfg.yaml"), "--out",
            str(tmp_path / "model"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "scvi", "reconstruct", "--model", str(tmp_path / "model"), "--data", data, "--backed", "--max-cells", "150",
            "--out", str(tmp_path / "rec"),
        ],
    )
    assert result.exit_code == 0, result.output
    combined = ad.read_h5ad(tmp_path / "rec" / "reconstructed.h5ad")
    assert combined.n_obs == 300 and combined.obs["source"].value_counts().to_dict() == {
        "real": 150,
        "reconstructed": 150,
    }
