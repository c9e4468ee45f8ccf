"""ConditionalSCVI: the user-facing model (AnnData in, AnnData / arrays out; save and load).

Examples
--------
>>> model = ConditionalSCVI(SCVIConfig(max_epochs=100, seed=0))
>>> model.train(adata, batch_key="donor_id", covariate_keys=["timepoint"], out_dir="run/")
>>> z = model.get_latent(adata)                            # (n_cells, n_latent)
>>> pred = model.predict(adata, set={"timepoint": "24h"})  # counterfactual cells
>>> model.save("model/"); model = ConditionalSCVI.load("model/")
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anndata as ad
import lightning as L
import numpy as np
import pandas as pd
import torch

from cellsmith._logging import logger, seed_everything
from cellsmith.data import GeneSpace, normalize
from cellsmith.data.audit import describe_source
from cellsmith.data.io import require_unique_genes
from cellsmith.data.rows import BLOCK_ROWS
from cellsmith.data.splits import split_indices
from cellsmith.errors import CellsmithDeprecationWarning, ConfigError, InputError, ModelDirectoryError
from cellsmith.nn import torch_threads
from cellsmith.nn.base import CellsmithModel
from cellsmith.nn.saving import ModelFiles, load_legacy_state
from cellsmith.scvi.batches import FIXED_EPOCH, BlockBatches, ControlPairing, CountBatches, EpochBatches, epoch_rng
from cellsmith.scvi.config import SCVIConfig
from cellsmith.scvi.data import (
    CellData,
    DataSetup,
    aligned_rows,
    category_codes,
    dense_inputs,
    observed_categories,
    one_hot,
    zero_columns,
)
from cellsmith.scvi.module import ConditionalVAE
from cellsmith.scvi.plan import SCVIPlan

_EVAL_BATCH = 1024
#: Files of a model folder written by cellsmith 0.1 (no manifest; pickled ``model.pt``).
_LEGACY_FILES = ("model.pt", "config.yaml", "setup.json", "genespace.json")


class ConditionalSCVI(CellsmithModel):
    """Conditional scVI on raw counts: batch (donor) and categorical covariates, an optional
    perturbation, NB / ZINB likelihood and the always-zero gene penalty.

    Parameters
    ----------
    config
        Architecture and training options, seed and hardware included (defaults when None).
    """

    workflow = "scvi"
    config_class = SCVIConfig
    command = "cellsmith scvi train"
    config: SCVIConfig
    module: ConditionalVAE | None

    def __init__(self, config: SCVIConfig | None = None):
        super().__init__(config)
        self.setup: DataSetup | None = None
        #: Indices of the cells of ``train``'s AnnData used for training and validation.
        self.split: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------------------- training
    def train(
        self,
        adata: ad.AnnData,
        *,
        batch_key: str | None = "donor_id",
        covariate_keys: Sequence[str] = (),
        perturbation_key: str | None = None,
        control_label: str | None = None,
        match_key: str | None = None,
        counts_layer: str | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        callbacks: Sequence[L.Callback] = (),
        seed: int | None = None,
        progress_bar: bool | None = None,
    ) -> ConditionalSCVI:
        """Fit the model on the raw counts of ``adata``.

        Parameters
        ----------
        adata
            Cells x genes; raw counts in X or ``counts_layer``. Its genes become the model's
            :class:`~cellsmith.data.GeneSpace`. The counts stay sparse; an AnnData opened
            backed (:func:`cellsmith.data.rows.read_backed`) is read block by block (shuffled
            row blocks, rows shuffled within a buffer of blocks), so only a buffer is in memory.
        batch_key
            obs column of the batch (donor); None for data of one batch.
        covariate_keys
            Other categorical obs columns (e.g. ``["timepoint"]``).
        perturbation_key, control_label
            Perturbation mode: each perturbed cell is reconstructed from a control cell of its
            batch (and ``match_key`` value), decoded under its perturbation.
        match_key
            Optional obs column controls are matched on besides the batch (e.g. cell type).
        counts_layer
            Layer with raw counts (default X).
        out_dir
            Folder of checkpoints and the metrics log (``checkpoints/``, ``logs/``); a temporary
            folder when None.
        resume
            Continue from ``out_dir/checkpoints/last.ckpt`` (same data and config).
        callbacks
            Extra Lightning callbacks.
        seed, progress_bar
            Deprecated: set ``config.seed`` / ``config.progress_bar`` instead (they override the
            config, with a warning, for one release).

        Returns
        -------
        self, trained (the weights of the best validation epoch); ``history`` holds the
        per-epoch loss terms, ``split`` the training and validation cells.

        Raises
        ------
        ScaleError, InputError
            On non-count data, missing obs columns or an unknown control label, or perturbation
            mode on a backed AnnData (pairing draws control cells from the whole data, at random
            rows: train it in memory); nothing is written then.
        """
        self._deprecated_overrides(seed=seed, progress_bar=progress_bar)
        if (perturbation_key is None) != (control_label is None):
            raise InputError("perturbation mode needs both perturbation_key and control_label.")
        if match_key is not None and perturbation_key is None:
            raise InputError("match_key pairs perturbed with control cells; pass perturbation_key too.")
        setup = DataSetup(
            batch_key=batch_key,
            covariate_keys=list(covariate_keys),
            perturbation_key=perturbation_key,
            control_label=control_label,
            match_key=match_key,
            counts_layer=counts_layer,
        )
        if perturbation_key is not None and adata.isbacked:
            raise InputError(
                "perturbation mode pairs each perturbed cell with a random control cell of the whole "
                "data set, which a backed (out-of-core) run does not read at random; train it in "
                "memory (drop --backed)."
            )
        setup.categories = observed_categories(adata, setup)
        require_unique_genes(adata.var_names, describe_source(adata))
        genespace = GeneSpace(adata.var_names)
        data = CellData(aligned_rows(adata, genespace, counts_layer), category_codes(adata, setup))
        setup.always_zero_genes = [genespace.names[i] for i in np.flatnonzero(zero_columns(data.counts))]
        self.setup, self.genespace = setup, genespace

        config = self.config
        seed_everything(config.seed)
        self.module = self._build_module()
        self.split = split_indices(data.n_cells, {"validation": config.val_fraction}, seed=config.seed)
        plan = SCVIPlan(
            self.module,
            codes=data.codes,
            categories=setup.categories,
            encoder_keys=self._encoder_keys,
            decoder_keys=setup.decoder_keys,
            config=config,
        )
        loaders = {
            stage: self._loader(data, idx, stage == "train") for stage, idx in self.split.items()
        }
        logger.info(
            "training conditional scVI on %d cells x %d genes (%d always zero, %s), %s, decoder keys %s",
            data.n_cells, len(genespace), len(setup.always_zero_genes),
            "backed" if data.counts.backed else "in memory", config.likelihood, setup.decoder_keys,
        )
        start = time.perf_counter()
        trainer = self.fit_plan(
            plan, loaders["train"], loaders["validation"], out_dir=out_dir, resume=resume, callbacks=callbacks
        )
        seconds = time.perf_counter() - start
        logger.info(
            "trained %d steps in %.1f s (%.0f training cells/s)",
            trainer.global_step, seconds, trainer.global_step * config.batch_size / max(seconds, 1e-9),
        )
        return self

    def _loader(self, data: CellData, indices: np.ndarray, train: bool) -> CountBatches | BlockBatches:
        """The batches of ``indices``: shuffled each epoch for training, in order for validation."""
        batch_size = self.config.batch_size if train else _EVAL_BATCH
        if data.counts.backed:
            return BlockBatches(data.counts, indices, batch_size=batch_size, seed=self.config.seed, shuffle=train)
        batches = EpochBatches(
            indices, self._pairing(data, indices), batch_size=batch_size, seed=self.config.seed, shuffle=train
        )
        return CountBatches(batches, data.counts)

    def _deprecated_overrides(self, **values: Any) -> None:
        """Old ``train`` keywords of options that now live in the config: warn, then apply."""
        given = {name: value for name, value in values.items() if value is not None}
        for name in given:
            warnings.warn(
                f"ConditionalSCVI.train({name}=...) is deprecated; set it in the config instead "
                f"(SCVIConfig({name}=...)). The keyword will be removed in a later release.",
                CellsmithDeprecationWarning,
                stacklevel=3,
            )
        if given:
            self.config = self.config.model_copy(update=given)

    def _build_module(self) -> ConditionalVAE:
        setup, config = self.setup, self.config
        width = lambda keys: sum(len(setup.categories[k]) for k in keys)  # noqa: E731
        return ConditionalVAE(
            len(self.genespace),
            width(setup.encoder_keys) if config.encode_covariates else 0,
            width(setup.decoder_keys),
            always_zero=[self.genespace.index(g) for g in setup.always_zero_genes],
            zero_penalty=config.zero_penalty,
            zero_gene_init=config.zero_gene_init,
            n_latent=config.n_latent,
            n_hidden=config.n_hidden,
            n_layers=config.n_layers,
            dropout=config.dropout,
            likelihood=config.likelihood,
        )

    @property
    def _encoder_keys(self) -> list[str]:
        """Keys whose one-hots the encoder sees; none when the encoder is not conditioned."""
        return self.setup.encoder_keys if self.config.encode_covariates else []

    def _pairing(self, data: CellData, pool: np.ndarray) -> ControlPairing:
        setup = self.setup
        if setup.perturbation_key is None:
            return ControlPairing(np.ones(data.n_cells, bool), np.zeros(data.n_cells, int), pool)
        control_code = setup.categories[setup.perturbation_key].index(setup.control_label)
        group = data.codes[setup.batch_column].copy()
        if setup.match_key is not None:
            group = group * len(setup.categories[setup.match_key]) + data.codes[setup.match_key]
        return ControlPairing(data.codes[setup.perturbation_key] == control_code, group, pool)

    # ----------------------------------------------------------------------------- inference
    def _encode(self, adata: ad.AnnData, overrides: Mapping[str, str] | None = None) -> tuple[CellData, dict]:
        self.require_trained()
        codes = category_codes(adata, self.setup)
        decoder_codes = category_codes(adata, self.setup, overrides) if overrides else codes
        return CellData(aligned_rows(adata, self.genespace, self.setup.counts_layer), codes), decoder_codes

    @torch.inference_mode()
    def _run(
        self,
        data: CellData,
        decoder_codes: dict,
        outputs: Sequence[str],
        sources: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """``outputs`` of every cell (among ``latent``, ``mean``, ``zero_probability``,
        ``zi_probability``, ``log_likelihood``): encode ``sources`` (default: each
        cell itself), decode under ``decoder_codes`` at each cell's library size; the latent is
        the posterior mean (deterministic). The counts are read in row blocks and densified one
        batch at a time, so memory holds one block and the outputs asked for."""
        self.module.to(self.device).eval()
        parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        with torch_threads(self.config.num_threads):
            for start, block in data.counts.blocks(BLOCK_ROWS):
                for first in range(0, block.shape[0], _EVAL_BATCH):
                    targets = np.arange(start + first, start + min(first + _EVAL_BATCH, block.shape[0]))
                    rows = block[first : first + _EVAL_BATCH]
                    batch_sources = targets if sources is None else sources[targets]
                    source_rows = None if sources is None else data.counts.take(batch_sources)
                    decoded = self._decode(data, decoder_codes, targets, batch_sources, rows, source_rows, outputs)
                    for name, value in decoded.items():
                        parts[name].append(value)
        return {name: np.concatenate(values) for name, values in parts.items()}

    def _decode(
        self,
        data: CellData,
        decoder_codes: dict,
        targets: np.ndarray,
        sources: np.ndarray,
        rows,
        source_rows,
        outputs: Sequence[str],
    ) -> dict[str, np.ndarray]:
        """The ``outputs`` of one batch of cells (``rows``: their CSR counts)."""
        device, setup = self.device, self.setup
        x, x_log, library = dense_inputs(rows, source_rows, device)
        out = self.module(
            x_log,
            one_hot(data.codes, self._encoder_keys, setup.categories, sources, device),
            one_hot(decoder_codes, setup.decoder_keys, setup.categories, targets, device),
            library,
        )
        zi = out["zi_logits"]
        values = {
            "latent": lambda: out["z_mu"],
            "mean": lambda: out["mu"],
            "zero_probability": lambda: self.module.zero_probability(out),
            "zi_probability": lambda: torch.sigmoid(zi) if zi is not None else torch.zeros_like(out["mu"]),
            "log_likelihood": lambda: self.module.log_likelihood(x, out),
        }
        return {name: values[name]().float().cpu().numpy() for name in outputs}

    def get_latent(self, adata: ad.AnnData) -> np.ndarray:
        """(n_cells, n_latent) posterior means of the cells of ``adata``."""
        data, codes = self._encode(adata)
        return self._run(data, codes, ["latent"])["latent"]

    def log_likelihood(self, adata: ad.AnnData) -> np.ndarray:
        """(n_cells,) log-likelihood of each cell's counts, summed over genes, decoded from its
        posterior-mean latent at its observed library size (held-out NLL = ``-mean``)."""
        data, codes = self._encode(adata)
        return self._run(data, codes, ["log_likelihood"])["log_likelihood"]

    def matched_sources(self, adata: ad.AnnData, *, seed: int | None = None) -> np.ndarray:
        """Source cell of each cell of ``adata``: itself, or in perturbation mode a seeded random
        control cell of the same batch (and match key) for a perturbed cell."""
        return self._matched(self._encode(adata)[0], seed)

    def _matched(self, data: CellData, seed: int | None) -> np.ndarray:
        pairing = self._pairing(data, np.arange(data.n_cells))
        return pairing.sources(
            np.arange(data.n_cells), epoch_rng(self.config.seed if seed is None else seed, FIXED_EPOCH)
        )

    def reconstruct(self, adata: ad.AnnData, *, seed: int | None = None) -> dict[str, np.ndarray]:
        """Decoded mean counts (``mean``), P(zero) (``zero_probability``), ``sampled_counts`` (a
        seeded draw from the decoded distribution) and ``latent`` of each cell; in perturbation
        mode a perturbed cell is predicted from its matched control."""
        data, codes = self._encode(adata)
        sources = self._matched(data, seed) if self.setup.perturbation_key is not None else None
        out = self._run(data, codes, ["latent", "mean", "zero_probability", "zi_probability"], sources)
        out["sampled_counts"] = self._sample(
            out["mean"], out["zi_probability"], self.config.seed if seed is None else seed
        )
        return out

    def predict(self, adata: ad.AnnData, *, set: Mapping[str, str], seed: int = 0) -> ad.AnnData:  # noqa: A002
        """Counterfactual cells: encode each cell with its own covariates, decode it with the
        covariates in ``set`` swapped (e.g. ``{"timepoint": "24h"}``), at its library size.

        Returns
        -------
        AnnData
            Same cells and obs as ``adata`` with the swapped values in obs (the observed ones in
            ``obs["<key>_observed"]``); X the predicted mean counts, ``layers["log1p_norm"]``
            their :func:`~cellsmith.data.normalize.log1p_normalize`, ``layers["sampled_counts"]``
            a seeded draw from the predicted distribution, ``obsm["X_scvi"]`` the latent;
            ``uns["scvi_predict"]`` the swapped values and the gene-space digest.

        Raises
        ------
        InputError
            On an unknown key or a category not seen in training.
        """
        if not set:
            raise InputError("predict needs at least one KEY=VALUE to set (e.g. timepoint=24h).")
        data, decoder_codes = self._encode(adata, set)
        out = self._run(data, decoder_codes, ["latent", "mean", "zi_probability"])
        mean = out["mean"]
        obs = adata.obs.copy()
        for key, value in set.items():
            if key in obs:
                obs[f"{key}_observed"] = obs[key]
            obs[key] = pd.Categorical([str(value)] * adata.n_obs, categories=self.setup.categories[key])
        pred = ad.AnnData(X=mean, obs=obs, var=pd.DataFrame(index=list(self.genespace.names)))
        pred.layers["log1p_norm"] = normalize.log1p_normalize(mean)
        pred.layers["sampled_counts"] = self._sample(mean, out["zi_probability"], seed)
        pred.obsm["X_scvi"] = out["latent"]
        pred.uns["scvi_predict"] = {
            "set": {k: str(v) for k, v in set.items()},
            "genespace_digest": self.genespace.digest,
        }
        return pred

    def _sample(self, mean: np.ndarray, zi_probability: np.ndarray, seed: int) -> np.ndarray:
        """A seeded draw of counts from the decoded NB / ZINB (Gamma-Poisson, then zero inflation)."""
        rng = np.random.default_rng(seed)
        theta = self.module.log_theta.detach().exp().cpu().numpy().astype(np.float64)
        counts = rng.poisson(rng.gamma(shape=theta, scale=mean / theta)).astype(np.float32)
        counts[rng.random(counts.shape) < zi_probability] = 0.0
        return counts

    # ----------------------------------------------------------------------------- persistence
    def setup_dict(self) -> dict[str, Any]:
        """``setup.json``: the :class:`DataSetup` and the validation cells of training."""
        n_cells = sum(len(idx) for idx in self.split.values())
        split = {"n_cells": n_cells, "validation": self.split.get("validation", np.zeros(0, int)).tolist()}
        return {**asdict(self.setup), "split": split}

    def restore(self, files: ModelFiles) -> None:
        setup = dict(files.setup)
        split = setup.pop("split", None) or {"n_cells": 0, "validation": []}
        self.setup = DataSetup(**setup)
        validation = np.asarray(split["validation"], dtype=np.int64)
        train = np.setdiff1d(np.arange(split["n_cells"]), validation)
        self.split = {"train": train, "validation": validation}
        self.module = self._build_module()
        self.module.load_state_dict(files.weights)

    @classmethod
    def read_legacy(cls, path: Path) -> ModelFiles:
        """Read a model folder of cellsmith 0.1 (``model.pt``, ``config.yaml``, ``setup.json``,
        ``genespace.json``; no manifest). Its ``model.pt`` is read with ``weights_only=True``
        (tensors and arrays only). Saving the loaded model writes the current format.
        """
        missing = [name for name in _LEGACY_FILES if not (path / name).is_file()]
        if missing:
            raise ModelDirectoryError(
                f"{path} has no cellsmith_model.json and lacks {', '.join(missing)}, so it is neither a "
                f"model folder of this cellsmith nor of cellsmith 0.1; pass the --out folder of `{cls.command}`."
            )
        payload = load_legacy_state(path / "model.pt")
        if not isinstance(payload, dict) or not {"state_dict", "seed", "split"} <= set(payload):
            raise ModelDirectoryError(
                f"{path / 'model.pt'} is not a cellsmith 0.1 scVI model (expected a dict with state_dict, "
                f"seed and split); retrain with `{cls.command}`."
            )
        warnings.warn(
            f"{path} is a model folder of cellsmith 0.1; it loads for one more release. Convert it with "
            "ConditionalSCVI.load(old).save(new).",
            CellsmithDeprecationWarning,
            stacklevel=2,
        )
        try:
            config = cls.config_class.from_yaml(path / "config.yaml", seed=int(payload["seed"]))
        except ConfigError as err:
            raise ModelDirectoryError(f"{path}: {err}") from None
        split = {name: np.asarray(idx) for name, idx in payload["split"].items()}
        setup = json.loads((path / "setup.json").read_text())
        setup["split"] = {
            "n_cells": int(sum(idx.size for idx in split.values())),
            "validation": split.get("validation", np.zeros(0, int)).tolist(),
        }
        return ModelFiles(
            path=path,
            config=config,
            setup=setup,
            weights=payload["state_dict"],
            genespace=GeneSpace.read(path / "genespace.json"),
        )
