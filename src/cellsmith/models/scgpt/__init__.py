"""scGPT (Cui et al. 2024) without the ``scgpt`` package.

- :mod:`.model`: :class:`ScGPT`, the encoder of scGPT's ``TransformerModel`` (gene encoder,
  value encoder, transformer encoder, the ``<cls>`` output), state-dict compatible with it;
- :mod:`.checkpoint`: :func:`load_checkpoint` reads an official checkpoint folder
  (``args.json``, ``vocab.json``, ``best_model.pt``) with an explicit key map;
- :mod:`.preprocess`: the input of ``embed_data`` (vocabulary filter, normalize_total 1e4,
  log1p, per-cell binning into 51 bins, ``<cls>`` + pad, the gene choice beyond max length).

Verified against scGPT 0.2.4 itself by ``tests/test_scgpt_model.py`` on the fixture written
by ``benchmarks/make_scgpt_fixture.py``.
"""

from cellsmith.models.scgpt.checkpoint import CHECKPOINT_FILES, ScGPTCheckpoint, load_checkpoint, map_state_dict
from cellsmith.models.scgpt.model import ScGPT, ScGPTConfig
from cellsmith.models.scgpt.preprocess import N_BINS, bin_nonzero, bin_rows, choose_genes, tokenize

__all__ = [
    "CHECKPOINT_FILES", "N_BINS", "ScGPT", "ScGPTCheckpoint", "ScGPTConfig", "bin_nonzero", "bin_rows",
    "choose_genes", "load_checkpoint", "map_state_dict", "tokenize",
]
