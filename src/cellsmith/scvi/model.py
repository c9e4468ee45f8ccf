"""ConditionalSCVI: the user-facing model (AnnData in, AnnData / arrays out; save and load).

Examples
--------
>>> model = ConditionalSCVI(SCVIConfig(max_epochs=100))
>>> model.train(adata, batch_key="donor_id", covariate_keys=["timepoint"], out_dir="run/")
>>> z = model.get_latent(adata)                            # (n_cells, n_latent)
>>> pred = model.predict(adata, set={"timepoint": "24h"})  # counterfactual cells
>>> model.save("model/"); model = ConditionalSCVI.load("model/")
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import lightning as L
import numpy as np
import pandas as pd
import torch

from cellsmith._logging import logger, seed_everything
from cellsmith.data import GeneSpace, normalize
from cellsmith.errors import InputError
from cellsmith.nn import load_best_weights, make_trainer, torch_threads
from cellsmith.report import write_atomic
from cellsmith.scvi.batches import FIXED_EPOCH, ControlPairing, EpochBatches, epoch_rng
from cellsmith.scvi.config import SCVIConfig
from cellsmith.scvi.data import (
    DataSetup,
    EncodedData,
    aligned_counts,
    category_codes,
    encode_cells,
    observed_categories,
    one_hot,
)
from cellsmith.scvi.module import ConditionalVAE
from cellsmith.scvi.plan import SCVIPlan

_WEIGHTS, _CONFIG, _SETUP, _GENES, _HISTORY = "model.pt", "config.yaml", "setup.json", "genespace.json", "history.csv"
_EVAL_BATCH = 1024


class ConditionalSCVI:
    """Conditional scVI on raw counts: batch (donor) and categorical covariates, an optional
    perturbation, NB / ZINB likelihood and the always-zero gene penalty.

    Parameters
    ----------
    config
        Architecture and training options (defaults when None).
    """

    def __init__(self, config: SCVIConfig | None = None):
        self.config = config or SCVIConfig()
        self.module: ConditionalVAE | None = None
        self.setup: DataSetup | None = None
        self.genespace: GeneSpace | None = None
        self.history: pd.DataFrame | None = None
        self.split: dict[str, np.ndarray] = {}
        self.seed = 0

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
        seed: int = 0,
        out_dir: str | Path | None = None,
        resume: bool = False,
        progress_bar: bool = True,
        callbacks: Sequence[L.Callback] = (),
    ) -> ConditionalSCVI:
        """Fit the model on the raw counts of ``adata``.

        Parameters
        ----------
        adata
            Cells x genes; raw counts in X or ``counts_layer``. Its genes become the model's
            :class:`~cellsmith.data.GeneSpace`.
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
        seed
            Seeds the validation split, batch order, pairing and initialisation.
        out_dir
            Folder of checkpoints and the metrics log (``checkpoints/``, ``logs/``); a temporary
            folder when None.
        resume
            Continue from ``out_dir/checkpoints/last.ckpt`` (same data, config and seed).
        progress_bar
            Show a progress bar.
        callbacks
            Extra Lightning callbacks.

        Returns
        -------
        self, trained (with early stopping: the weights of the best validation epoch);
        ``history`` holds the per-epoch loss terms.

        Raises
        ------
        ScaleError, InputError
            On non-count data, missing obs columns or an unknown control label; nothing is
            written then.
        """
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
        setup.categories = observed_categories(adata, setup)
        genespace = GeneSpace(adata.var_names)
        counts = aligned_counts(adata, genespace, counts_layer)
        setup.always_zero_genes = [genespace.names[i] for i in np.flatnonzero(counts.sum(0) == 0)]
        self.setup, self.genespace, self.seed = setup, genespace, seed
        data = encode_cells(counts, category_codes(adata, setup))
        if resume and (out_dir is None or not (Path(out_dir) / "checkpoints" / "last.ckpt").is_file()):
            raise InputError(f"cannot resume: no checkpoints/last.ckpt under {out_dir}; train without --resume.")

        seed_everything(seed)
        self.module = self._build_module()
        order = np.random.default_rng([seed, FIXED_EPOCH]).permutation(data.n_cells)
        n_val = max(1, int(round(self.config.val_fraction * data.n_cells)))
        self.split = {"validation": np.sort(order[:n_val]), "train": np.sort(order[n_val:])}
        plan = SCVIPlan(
            self.module,
            x=data.x,
            x_log=data.x_log,
            library=data.library,
            encoder_covariates=self._encoder_covariates(data.codes),
            decoder_covariates=one_hot(data.codes, setup.decoder_keys, setup.categories),
            config=self.config,
            seed=seed,
        )
        loaders = {
            stage: EpochBatches(
                idx,
                self._pairing(data, idx),
                batch_size=self.config.batch_size if stage == "train" else _EVAL_BATCH,
                seed=seed,
                shuffle=stage == "train",
            )
            for stage, idx in self.split.items()
        }
        logger.info(
            "training conditional scVI on %d cells x %d genes (%d always zero), %s, decoder keys %s",
            data.n_cells, len(genespace), len(setup.always_zero_genes), self.config.likelihood, setup.decoder_keys,
        )
        with tempfile.TemporaryDirectory() as scratch:
            run_dir = Path(out_dir) if out_dir is not None else Path(scratch)
            trainer = make_trainer(
                run_dir,
                max_epochs=self.config.max_epochs,
                patience=self.config.patience,
                progress_bar=progress_bar,
                callbacks=list(callbacks),
                log_every_n_steps=1,
            )
            ckpt = run_dir / "checkpoints" / "last.ckpt" if resume else None
            # Lightning's CSV logger starts a new file on resumption: keep the earlier epochs.
            earlier = _read_history(run_dir / "logs" / "metrics.csv") if resume else None
            with torch_threads(self.config.num_threads), warnings.catch_warnings():
                if resume:  # the checkpoint and log folders exist by design
                    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
                trainer.fit(plan, train_dataloaders=loaders["train"], val_dataloaders=loaders["validation"], ckpt_path=ckpt)
            self.history = _merge_history(earlier, _read_history(run_dir / "logs" / "metrics.csv"))
            if self.config.patience > 0:  # with early stopping, keep the best validation epoch
                load_best_weights(trainer, plan)
        self.module.eval()
        return self

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

    def _encoder_covariates(self, codes: Mapping[str, np.ndarray]) -> torch.Tensor:
        """(N, E) encoder one-hots; zero columns when the encoder is not conditioned."""
        block = one_hot(codes, self.setup.encoder_keys, self.setup.categories)
        return block if self.config.encode_covariates else block[:, :0]

    def _pairing(self, data: EncodedData, pool: np.ndarray) -> ControlPairing:
        setup = self.setup
        if setup.perturbation_key is None:
            return ControlPairing(np.ones(data.n_cells, bool), np.zeros(data.n_cells, int), pool)
        control_code = setup.categories[setup.perturbation_key].index(setup.control_label)
        group = data.codes[setup.batch_column].copy()
        if setup.match_key is not None:
            group = group * len(setup.categories[setup.match_key]) + data.codes[setup.match_key]
        return ControlPairing(data.codes[setup.perturbation_key] == control_code, group, pool)

    # ----------------------------------------------------------------------------- inference
    def _require_trained(self) -> None:
        if self.module is None:
            raise InputError("the model is not trained; call train() or ConditionalSCVI.load() first.")

    def _encode(self, adata: ad.AnnData, overrides: Mapping[str, str] | None = None) -> tuple[EncodedData, dict]:
        self._require_trained()
        codes = category_codes(adata, self.setup)
        decoder_codes = category_codes(adata, self.setup, overrides) if overrides else codes
        return encode_cells(aligned_counts(adata, self.genespace, self.setup.counts_layer), codes), decoder_codes

    @torch.inference_mode()
    def _run(
        self, data: EncodedData, decoder_codes: dict, sources: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Encode ``sources`` (default: each cell itself), decode under ``decoder_codes`` at each
        cell's library size; the latent is the posterior mean (deterministic)."""
        self.module.eval()
        with torch_threads(self.config.num_threads):
            return self._decode_batches(data, decoder_codes, sources)

    def _decode_batches(
        self, data: EncodedData, decoder_codes: dict, sources: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        sources = np.arange(data.n_cells) if sources is None else sources
        enc = self._encoder_covariates(data.codes)
        dec = one_hot(decoder_codes, self.setup.decoder_keys, self.setup.categories)
        parts: dict[str, list[np.ndarray]] = {
            "latent": [], "mean": [], "zero_probability": [], "zi_probability": [], "log_likelihood": []
        }
        for start in range(0, data.n_cells, _EVAL_BATCH):
            t = torch.arange(start, min(start + _EVAL_BATCH, data.n_cells))
            s = torch.from_numpy(sources[start : start + _EVAL_BATCH])
            out = self.module(data.x_log[s], enc[s], dec[t], data.library[t])
            parts["latent"].append(out["z_mu"].numpy())
            parts["mean"].append(out["mu"].numpy())
            parts["zero_probability"].append(self.module.zero_probability(out).numpy())
            parts["log_likelihood"].append(self.module.log_likelihood(data.x[t], out).numpy())
            zi = out["zi_logits"]
            parts["zi_probability"].append(torch.sigmoid(zi).numpy() if zi is not None else np.zeros_like(parts["mean"][-1]))
        return {k: np.concatenate(v) for k, v in parts.items()}

    def get_latent(self, adata: ad.AnnData) -> np.ndarray:
        """(n_cells, n_latent) posterior means of the cells of ``adata``."""
        data, codes = self._encode(adata)
        return self._run(data, codes)["latent"]

    def log_likelihood(self, adata: ad.AnnData) -> np.ndarray:
        """(n_cells,) log-likelihood of each cell's counts, summed over genes, decoded from its
        posterior-mean latent at its observed library size (held-out NLL = ``-mean``)."""
        data, codes = self._encode(adata)
        return self._run(data, codes)["log_likelihood"]

    def matched_sources(self, adata: ad.AnnData, *, seed: int | None = None) -> np.ndarray:
        """Source cell of each cell of ``adata``: itself, or in perturbation mode a seeded random
        control cell of the same batch (and match key) for a perturbed cell."""
        return self._matched(self._encode(adata)[0], seed)

    def _matched(self, data: EncodedData, seed: int | None) -> np.ndarray:
        pairing = self._pairing(data, np.arange(data.n_cells))
        return pairing.sources(np.arange(data.n_cells), epoch_rng(self.seed if seed is None else seed, FIXED_EPOCH))

    def reconstruct(self, adata: ad.AnnData, *, seed: int | None = None) -> dict[str, np.ndarray]:
        """Decoded mean counts (``mean``), P(zero) (``zero_probability``), ``sampled_counts`` (a
        seeded draw from the decoded distribution) and ``latent`` of each cell; in perturbation
        mode a perturbed cell is predicted from its matched control."""
        data, codes = self._encode(adata)
        out = self._run(data, codes, self._matched(data, seed))
        out["sampled_counts"] = self._sample(out["mean"], out["zi_probability"], self.seed if seed is None else seed)
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
        out = self._run(data, decoder_codes)
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
        pred.uns["scvi_predict"] = {"set": {k: str(v) for k, v in set.items()}, "genespace_digest": self.genespace.digest}
        return pred

    def _sample(self, mean: np.ndarray, zi_probability: np.ndarray, seed: int) -> np.ndarray:
        """A seeded draw of counts from the decoded NB / ZINB (Gamma-Poisson, then zero inflation)."""
        rng = np.random.default_rng(seed)
        theta = self.module.log_theta.detach().exp().numpy().astype(np.float64)
        counts = rng.poisson(rng.gamma(shape=theta, scale=mean / theta)).astype(np.float32)
        counts[rng.random(counts.shape) < zi_probability] = 0.0
        return counts

    # ----------------------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write weights, config (YAML), data setup, GeneSpace and history into folder ``path``.

        Each file is written atomically, the weights last, so a failed save never leaves a
        loadable mix; other files in the folder (e.g. ``training/`` checkpoints) are kept.
        """
        self._require_trained()
        path = Path(path)
        write_atomic(path / _CONFIG, self.config.to_yaml)
        write_atomic(path / _SETUP, self.setup.write)
        write_atomic(path / _GENES, self.genespace.write)
        if self.history is not None:
            write_atomic(path / _HISTORY, lambda tmp: self.history.to_csv(tmp, index=False))
        payload = {"state_dict": self.module.state_dict(), "seed": self.seed, "split": self.split}
        write_atomic(path / _WEIGHTS, lambda tmp: torch.save(payload, tmp))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConditionalSCVI:
        """Load a model written by :meth:`save`."""
        path = Path(path)
        missing = [n for n in (_WEIGHTS, _CONFIG, _SETUP, _GENES) if not (path / n).is_file()]
        if missing:
            raise InputError(
                f"{path} is not a saved ConditionalSCVI model (missing {', '.join(missing)}); "
                "pass the --out folder of `cellsmith scvi train`."
            )
        model = cls(SCVIConfig.from_yaml(path / _CONFIG))
        model.setup = DataSetup.read(path / _SETUP)
        model.genespace = GeneSpace.read(path / _GENES)
        payload = torch.load(path / _WEIGHTS, weights_only=False)
        model.seed, model.split = payload["seed"], payload["split"]
        model.module = model._build_module()
        model.module.load_state_dict(payload["state_dict"])
        model.module.eval()
        if (path / _HISTORY).is_file():
            model.history = pd.read_csv(path / _HISTORY)
        return model


def _read_history(path: Path) -> pd.DataFrame | None:
    """One row per epoch of the CSV log (train and validation rows merged)."""
    if not path.is_file():
        return None
    log = pd.read_csv(path)
    return log.drop(columns=[c for c in ("step",) if c in log]).groupby("epoch", as_index=False).first()


def _merge_history(earlier: pd.DataFrame | None, later: pd.DataFrame | None) -> pd.DataFrame | None:
    """Epochs of an interrupted run followed by those of its resumption."""
    if earlier is None or later is None:
        return later if earlier is None else earlier
    return pd.concat([earlier[earlier["epoch"] < later["epoch"].min()], later], ignore_index=True)
