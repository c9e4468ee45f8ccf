"""The target vocabulary: every gene that has an embedding, beside the predicted gene space.

A screen's targets are often not measured in it, or not highly variable, so they are not in the
output gene space. Pretraining therefore learns an embedding for every gene expressed in its
sources: the vocabulary is the gene space (first, in its order) followed by the other expressed
genes (sorted). It is a :class:`~cellsmith.data.GeneSpace` with its own digest, written as
``vocabulary.json`` beside ``genespace.json`` and checked the same way when a folder is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellsmith.data import GeneSpace
from cellsmith.data.rows import CountRows
from cellsmith.errors import GeneSpaceError
from cellsmith.nn.saving import ModelFiles

VOCABULARY_FILE = "vocabulary.json"


def detected_cells(counts: CountRows) -> np.ndarray:
    """(n_genes,) number of cells in which each gene has a nonzero count (read block by block)."""
    n = np.zeros(counts.shape[1], dtype=np.int64)
    for _, block in counts.blocks():
        n += np.bincount(block.indices, minlength=counts.shape[1])
    return n


def build_vocabulary(
    sources: Sequence[tuple[str, CountRows, Sequence[str]]], genespace: GeneSpace, *, min_cells: int
) -> GeneSpace:
    """The gene space followed by every other gene detected in ``min_cells`` cells or more of at
    least one source (sorted by name)."""
    expressed: set[str] = set()
    for _, counts, names in sources:
        expressed.update(np.asarray(names, dtype=object)[detected_cells(counts) >= min_cells].tolist())
    return GeneSpace([*genespace.names, *sorted(expressed - set(genespace.names))])


def read_vocabulary(files: ModelFiles, genespace: GeneSpace) -> GeneSpace:
    """The vocabulary of a read model folder, refused when its digest is not the one the weights
    were trained with or when it does not start with the gene space; the gene space itself for
    folders written before vocabularies existed."""
    path = files.file(VOCABULARY_FILE)
    trained = files.setup.get("vocabulary_digest")
    if path is None and trained in (None, genespace.digest):
        return genespace
    if path is None:
        raise GeneSpaceError(f"{files.path} lacks {VOCABULARY_FILE} (digest {trained}); copy the whole model folder.")
    vocabulary = GeneSpace.read(path)
    if vocabulary.digest != trained:
        raise GeneSpaceError(
            f"{files.path}: {VOCABULARY_FILE} has digest {vocabulary.digest} but the weights were trained "
            f"with vocabulary {trained}; the folder was edited."
        )
    if vocabulary.names[: len(genespace)] != genespace.names:
        raise GeneSpaceError(f"{files.path}: {VOCABULARY_FILE} does not start with the genes of genespace.json.")
    return vocabulary
