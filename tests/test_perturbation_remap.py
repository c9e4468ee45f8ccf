"""The gene space across phases: remapping by name, and refusing a different gene order."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cellsmith.data import GeneSpace
from cellsmith.errors import CellsmithDeprecationWarning, GeneSpaceError
from cellsmith.perturbation import FinetuneConfig, PerturbationModel, PretrainConfig, PretrainedGenes, RemappedCells


def test_remapped_pretraining_batch_equals_hand_built_expectation():
    space = GeneSpace(["A", "B", "C"])
    first = sp.csr_matrix(np.array([[1, 2, 3, 4], [0, 5, 5, 0]], dtype=np.float32))  # genes C X A D
    second = sp.csr_matrix(np.array([[5, 5]], dtype=np.float32))  # genes A B
    sources = [("first", first, ["C", "X", "A", "D"]), ("second", second, ["A", "B"])]
    # Library size uses every gene of the source; genes outside the space are dropped after.
    expected_x = np.log1p(
        np.array(
            [
                [5000.0, 5000.0, 0.0],  # second source, row 0: C not measured
                [3 / 10 * 1e4, 0.0, 1 / 10 * 1e4],  # first source, row 0: B not measured, X and D dropped
                [5 / 10 * 1e4, 0.0, 0.0],  # first source, row 1
            ]
        )
    )
    expected_observed = np.array([[True, True, False], [True, False, True], [True, False, True]])
    for cache in (False, True):
        cells = RemappedCells(sources, space, cache=cache)
        for _ in range(2):  # the second pass reads the cache
            batch = cells.__getitems__([2, 0, 1])
            np.testing.assert_allclose(batch["x"].numpy(), expected_x, rtol=1e-6)
            np.testing.assert_array_equal(batch["observed"].numpy(), expected_observed)
    assert cells.mapped_per_source == {"first": 2, "second": 2}
    assert sp.issparse(cells._sources[0].counts.matrix)


def test_fine_tuning_with_a_shuffled_gene_order_is_refused():
    names = [f"G{i}" for i in range(20)]
    space = GeneSpace(names)
    pretrained = PretrainedGenes.from_embeddings(
        space, np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    )
    shuffled = GeneSpace(list(np.random.default_rng(1).permutation(names)))
    screen = ad.AnnData(np.ones((4, 20), dtype=np.float32))
    with pytest.raises(GeneSpaceError) as err:
        PerturbationModel(FinetuneConfig()).train(screen, genespace=shuffled, pretrained=pretrained)
    assert space.digest in str(err.value) and shuffled.digest in str(err.value)
    # The deprecated two-step entry point of cellsmith 0.1 still builds the model, with a warning.
    with pytest.warns(CellsmithDeprecationWarning, match="create\\(\\) is deprecated"):
        model = PerturbationModel.create(space, FinetuneConfig(n_embed=4), pretrained=pretrained)
    np.testing.assert_array_equal(model.module.gene_embedding.detach().numpy(), pretrained.embeddings)


def test_pretrained_directory_round_trip_keeps_the_digest(tmp_path):
    space = GeneSpace(["A", "B", "C"])
    PretrainedGenes.from_embeddings(space, np.eye(3, dtype=np.float32), PretrainConfig(), {"x": 3}).save(tmp_path)
    assert (tmp_path / "weights.safetensors").is_file()
    loaded = PretrainedGenes.load(tmp_path)
    assert loaded.genespace.digest == space.digest and loaded.mapped_per_source == {"x": 3}
    np.testing.assert_array_equal(loaded.embeddings, np.eye(3))
    assert list(loaded.predict().index) == ["A", "B", "C"]
    GeneSpace(["A", "C", "B"]).write(tmp_path / "genespace.json")
    with pytest.raises(GeneSpaceError, match="edited"):
        PretrainedGenes.load(tmp_path)


def test_a_pretraining_folder_of_cellsmith_0_1_loads_and_converts(tmp_path):
    """0.1 wrote gene_embeddings.npy, pretrain_info.json, genespace.json and config.yaml."""
    import json

    space = GeneSpace(["A", "B", "C"])
    old = tmp_path / "old"
    old.mkdir()
    np.save(old / "gene_embeddings.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    space.write(old / "genespace.json")
    PretrainConfig(n_embed=2).to_yaml(old / "config.yaml")
    info = {"genespace_digest": space.digest, "n_genes": 3, "n_embed": 2, "mapped_per_source": {"cells": 3}}
    (old / "pretrain_info.json").write_text(json.dumps(info))
    loaded = PretrainedGenes.load(old)
    np.testing.assert_array_equal(loaded.embeddings, np.arange(6).reshape(3, 2))
    loaded.save(tmp_path / "new")
    np.testing.assert_array_equal(PretrainedGenes.load(tmp_path / "new").embeddings, loaded.embeddings)


def test_the_random_control_keeps_the_vocabulary_and_only_the_values_change():
    from cellsmith.perturbation.experiment import random_embeddings_like

    space = GeneSpace([f"G{i}" for i in range(400)])
    table = (
        np.random.default_rng(0).normal(loc=[0.5, -1.0, 2.0], scale=[1.0, 0.2, 3.0], size=(400, 3)).astype(np.float32)
    )
    pretrained = PretrainedGenes.from_embeddings(space, table)
    control = random_embeddings_like(pretrained, seed=3)
    # Same vocabulary: the split holds out the same targets and learns the same ones.
    assert control.vocabulary.digest == pretrained.vocabulary.digest
    assert control.genespace.digest == pretrained.genespace.digest
    np.testing.assert_array_equal(pretrained.vocabulary_embeddings, table)  # the original is untouched
    noise = control.vocabulary_embeddings
    assert noise.shape == table.shape
    assert abs(np.corrcoef(noise[:, 2], table[:, 2])[0, 1]) < 0.2  # no gene keeps its vector
    np.testing.assert_allclose(noise.mean(axis=0), table.mean(axis=0), atol=0.35)
    np.testing.assert_allclose(noise.std(axis=0), table.std(axis=0), rtol=0.15)
    np.testing.assert_array_equal(random_embeddings_like(pretrained, seed=3).vocabulary_embeddings, noise)
    assert not np.array_equal(random_embeddings_like(pretrained, seed=4).vocabulary_embeddings, noise)
