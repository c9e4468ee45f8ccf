"""GeneSpace: the one ordered gene list that travels with every model.

Gene index ``i`` means the same gene in pretraining, fine-tuning, training and inference: data
are put into a model's gene order with :meth:`GeneSpace.align`, never by position in a file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellsmith._logging import logger
from cellsmith.data.io import require_unique_genes
from cellsmith.errors import GeneSpaceError


class GeneSpace:
    """An ordered list of unique gene names.

    Parameters
    ----------
    names
        Gene symbols in model order; must be unique and non-empty.
    """

    def __init__(self, names: Iterable[str]):
        names = tuple(str(n) for n in names)
        if not names:
            raise GeneSpaceError("a GeneSpace needs at least one gene name; got none.")
        require_unique_genes(names, "the gene list of a GeneSpace")
        self._names = names
        self._index = {name: i for i, name in enumerate(names)}

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def digest(self) -> str:
        """A stable hash of the ordered names (16 hex characters)."""
        return hashlib.sha256("\n".join(self._names).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self):
        return iter(self._names)

    def __contains__(self, gene: object) -> bool:
        return gene in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GeneSpace) and self._names == other._names

    def __hash__(self) -> int:
        return hash(self._names)

    def __repr__(self) -> str:
        head = ", ".join(self._names[:3])
        return f"GeneSpace({len(self)} genes: {head}{', ...' if len(self) > 3 else ''}; digest {self.digest})"

    def index(self, gene: str) -> int:
        """Position of ``gene``; GeneSpaceError when absent."""
        try:
            return self._index[gene]
        except KeyError:
            raise GeneSpaceError(f"gene '{gene}' is not in {self!r}.") from None

    def to_json(self) -> str:
        return json.dumps({"names": list(self._names), "digest": self.digest})

    @classmethod
    def from_json(cls, text: str) -> GeneSpace:
        payload = json.loads(text)
        space = cls(payload["names"])
        if "digest" in payload and payload["digest"] != space.digest:
            raise GeneSpaceError(
                f"GeneSpace JSON digest {payload['digest']} does not match its names "
                f"({space.digest}); the file was edited or is corrupt."
            )
        return space

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> GeneSpace:
        return cls.from_json(Path(path).read_text())

    def index_map(
        self, source_names: Sequence[str], *, aliases: Mapping[str, str] | None = None
    ) -> np.ndarray:
        """For each source gene, its index in this space, or -1 when it is not in the space.

        Raises
        ------
        GeneSpaceError
            When a source name that maps into the space occurs more than once.
        """
        aliases = aliases or {}
        renamed = pd.Index([aliases.get(str(n), str(n)) for n in source_names])
        require_unique_genes(renamed[renamed.isin(self._names)], "the input")
        return np.array([self._index.get(n, -1) for n in renamed], dtype=np.int64)

    def align(
        self,
        adata: ad.AnnData,
        *,
        missing: str = "zero",
        min_overlap: float = 0.8,
        aliases: Mapping[str, str] | None = None,
    ) -> ad.AnnData:
        """Return a new AnnData with exactly this space's genes, in this order.

        Parameters
        ----------
        adata
            Cells (or samples) x genes; X and every layer are aligned.
        missing
            ``"zero"``: zero-fill space genes absent from ``adata``; ``"error"``: refuse them.
        min_overlap
            Smallest allowed fraction of space genes present in ``adata``.
        aliases
            Optional ``{input name: space name}`` map applied before matching (case-sensitive).

        Returns
        -------
        AnnData
            ``var_names`` equal to :attr:`names`; ``.uns["cellsmith"]["missing_genes"]`` lists
            the zero-filled genes and ``.uns["cellsmith"]["genespace_digest"]`` the digest.

        Raises
        ------
        GeneSpaceError
            Below ``min_overlap``, on missing genes with ``missing="error"``, or on duplicated
            input names.
        """
        if missing not in ("zero", "error"):
            raise GeneSpaceError(f"missing must be 'zero' or 'error', not '{missing}'.")
        source_to_space = self.index_map(adata.var_names, aliases=aliases)
        present = source_to_space >= 0
        n_present = int(present.sum())
        fraction = n_present / len(self)
        absent = np.setdiff1d(np.arange(len(self)), source_to_space[present])
        missing_genes = [self._names[i] for i in absent]
        examples = ", ".join(missing_genes[:5])
        if fraction < min_overlap:
            raise GeneSpaceError(
                f"only {n_present:,} of the {len(self):,} genes of the model's gene space "
                f"({100 * fraction:.1f}%) are in the input's {adata.n_vars:,} genes, below "
                f"min_overlap {100 * min_overlap:.0f}% (missing e.g. {examples}). Check that genes "
                "are symbols of the same species and annotation, pass an alias map, or retrain "
                "on the genes this input has."
            )
        if missing_genes and missing == "error":
            raise GeneSpaceError(
                f"{len(missing_genes):,} genes of the gene space are absent from the input "
                f"(e.g. {examples}); pass missing='zero' to zero-fill them."
            )
        if missing_genes:
            logger.info(
                "aligned to %d genes: %d zero-filled (e.g. %s)", len(self), len(missing_genes), examples
            )
        # A (n_source x n_space) selection matrix moves columns without densifying anything.
        cols = np.flatnonzero(present)
        selector = sp.csr_matrix(
            (np.ones(cols.size, dtype=np.float32), (cols, source_to_space[cols])),
            shape=(adata.n_vars, len(self)),
        )

        def move(x):
            if x is None:
                return None
            if sp.issparse(x):
                return sp.csr_matrix(x @ selector).astype(x.dtype)
            out = np.zeros((x.shape[0], len(self)), dtype=np.asarray(x).dtype)
            out[:, source_to_space[cols]] = np.asarray(x)[:, cols]
            return out

        aligned = ad.AnnData(
            X=move(adata.X),
            obs=adata.obs.copy(),
            var=pd.DataFrame(index=pd.Index(self._names, name=adata.var_names.name)),
            obsm={k: v.copy() for k, v in adata.obsm.items()},
            layers={k: move(v) for k, v in adata.layers.items()},
            uns={k: v for k, v in adata.uns.items() if k != "cellsmith"},
        )
        aligned.uns["cellsmith"] = dict(adata.uns.get("cellsmith", {}))
        aligned.uns["cellsmith"]["missing_genes"] = missing_genes
        aligned.uns["cellsmith"]["genespace_digest"] = self.digest
        return aligned
