"""Issue 13, acceptance 3: Arc's STATE transition model beside cellsmith, on the same split.

From a cellsmith model folder (its ``split.json``, ``heldout_controls.h5ad`` and
``heldout_real.h5ad``) and the screen it was fine-tuned on:

1. the screen's training and validation cells and the cells of the held-out perturbations are
   written in the model's gene space, log1p(CP10k) (the values cellsmith trains on and gives
   cell-eval), with obs ``gene`` (perturbation), ``cell_type`` and ``gem_group`` (the context);
   a cell-load TOML holds the held-out perturbations out (``fewshot`` test), so STATE trains on
   exactly cellsmith's training perturbations;
2. ``state tx train`` (model ``state_sm`` at ``--width``, CPU) in its own venv
   (``bash benchmarks/make_peer_venv.sh state``), timed;
3. ``state tx infer`` predicts the held-out perturbations from the held-out control cells
   (``--cells-per-target`` copies each, seeded, as cellsmith's prediction);
4. the prediction is scored by the same :func:`cellsmith.perturbation.workflow.run_evaluate`
   call as cellsmith's own (same real cells, same controls, baselines beside it).

    .venv/bin/python benchmarks/perturbation_state.py --screen S.h5ad --model MODEL_DIR --out DIR \\
        [--context-key donor_id] [--max-steps 2000] [--state /tmp/venv-state/bin/state]

STATE encodes perturbations one-hot (``pert_rep: onehot``, its default): a perturbation absent
from training has an untrained code, so held-out perturbations test what STATE does without any
knowledge of the target; this is stated beside its numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellsmith.data import GeneSpace, read
from cellsmith.data.rows import count_rows
from cellsmith.perturbation import Split
from cellsmith.perturbation.remap import GeneRemap
from cellsmith.perturbation.workflow import HELDOUT_CONTROLS, HELDOUT_REAL, run_evaluate

DATASET, CELL_TYPE = "screen", "all"


@dataclass
class Setup:
    """How a cellsmith model folder read its screen (weights are not needed here)."""

    genespace: GeneSpace
    perturbation_key: str
    control_label: str
    counts_layer: str | None

    @classmethod
    def read(cls, model_dir: Path) -> Setup:
        setup = json.loads((model_dir / "setup.json").read_text())
        return cls(
            GeneSpace.read(model_dir / "genespace.json"), setup["perturbation_key"], setup["control_label"],
            setup["counts_layer"],
        )


def in_space(adata: ad.AnnData, model: Setup, rows: np.ndarray, context_key: str | None) -> ad.AnnData:
    """Rows of a raw-count AnnData as log1p(CP10k) in the model's gene space, in STATE's obs layout."""
    remap = GeneRemap(model.genespace, list(adata.var_names), name="state input")
    x = remap.transform(count_rows(adata, layer=model.counts_layer), rows=rows)
    obs = pd.DataFrame(
        {
            "gene": adata.obs[model.perturbation_key].astype(str).to_numpy()[rows],
            "cell_type": CELL_TYPE,
            "gem_group": adata.obs[context_key].astype(str).to_numpy()[rows] if context_key else "all",
        },
        index=adata.obs_names[rows],
    )
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=list(model.genespace.names)))


def write_inputs(screen: ad.AnnData, model_dir: Path, out: Path, context_key: str | None) -> tuple[Path, Split]:
    """STATE's training file and TOML: training + validation cells, and the held-out perturbations' cells."""
    model, split = Setup.read(model_dir), Split.read(model_dir / "split.json")
    labels = screen.obs[model.perturbation_key].astype(str).to_numpy()
    keep = np.isin(screen.obs_names, split.train_cells + split.val_cells) | np.isin(labels, split.test_targets)
    (out / "data").mkdir(parents=True, exist_ok=True)
    in_space(screen, model, keep, context_key).write_h5ad(out / "data" / f"{DATASET}.h5ad")
    test = ", ".join(json.dumps(p) for p in split.test_targets)
    toml = out / "split.toml"
    toml.write_text(
        f'[datasets]\n{DATASET} = "{out / "data"}"\n\n[training]\n{DATASET} = "train"\n\n[zeroshot]\n\n'
        f'[fewshot]\n[fewshot."{DATASET}.{CELL_TYPE}"]\nval = []\ntest = [{test}]\n'
    )
    return toml, split


def infer_input(
    model_dir: Path, split: Split, out: Path, cells_per_target: int, seed: int, context_key: str | None
) -> Path:
    """The held-out controls, plus ``cells_per_target`` seeded copies of them per held-out perturbation."""
    model = Setup.read(model_dir)
    controls = read(model_dir / HELDOUT_CONTROLS)
    base = in_space(controls, model, np.ones(controls.n_obs, dtype=bool), context_key)
    rng = np.random.default_rng(seed)
    copies = []
    for target in split.test_targets:
        picked = base[rng.choice(base.n_obs, cells_per_target, replace=base.n_obs < cells_per_target)].copy()
        picked.obs["gene"] = target
        picked.obs_names = [f"{target}_{i}" for i in range(cells_per_target)]
        copies.append(picked)
    path = out / "infer_input.h5ad"
    ad.concat([base, *copies]).write_h5ad(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screen", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="cellsmith model folder (split, held-out cells).")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--context-key", default=None)
    parser.add_argument("--state", default="/tmp/venv-state/bin/state")
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument(
        "--width",
        type=int,
        default=128,
        help="STATE's hidden_dim (state_sm: 672, which took about 10 s a step on 2 loaded CPU cores); the "
        "backbone keeps state_sm's shape (4 llama layers, 8 heads, 4x MLP) at this width.",
    )
    parser.add_argument("--cells-per-target", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    toml, split = write_inputs(read(args.screen), args.model, args.out, args.context_key)
    model = Setup.read(args.model)
    train = [
        args.state, "tx", "train", f"data.kwargs.toml_config_path={toml}", "data.kwargs.embed_key=null",
        "data.kwargs.output_space=gene", "data.kwargs.pert_col=gene", "data.kwargs.cell_type_key=cell_type",
        "data.kwargs.batch_col=gem_group", f"data.kwargs.control_pert={model.control_label}",
        "data.kwargs.num_workers=0", "data.kwargs.pin_memory=false", "model=state_sm", "model.device=cpu",
        f"model.kwargs.hidden_dim={args.width}",
        f"model.kwargs.transformer_backbone_kwargs.intermediate_size={4 * args.width}",
        f"model.kwargs.transformer_backbone_kwargs.head_dim={args.width // 8}", "model.kwargs.cell_set_len=32",
        f"training.max_steps={args.max_steps}", "training.batch_size=8", f"training.val_freq={args.max_steps}",
        f"training.ckpt_every_n_steps={args.max_steps}", "training.wandb_track=false", "use_wandb=false",
        f"training.train_seed={args.seed}", f"output_dir={args.out}", "name=run", "overwrite=true",
    ]
    start = time.perf_counter()
    subprocess.run(train, check=True)
    train_seconds = time.perf_counter() - start
    source = infer_input(args.model, split, args.out, args.cells_per_target, args.seed, args.context_key)
    predicted = args.out / "state_pred.h5ad"
    start = time.perf_counter()
    subprocess.run(
        [
            args.state, "tx", "infer", "--model-dir", str(args.out / "run"), "--adata", str(source), "--pert-col",
            "gene", "--celltype-col", "cell_type", "--batch-col", "gem_group", "--control-pert", model.control_label,
            "--seed", str(args.seed), "--output", str(predicted),
        ],
        check=True,
        # arc-state 0.11.1 loads its Lightning checkpoint (which holds NumPy scalars) with torch's
        # default weights_only=True of torch >= 2.6 and fails; the checkpoint is the one this run
        # has just written, so the full unpickling torch offers for trusted files is allowed here only.
        env={**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )
    infer_seconds = time.perf_counter() - start
    state = read(predicted)
    # The same rows as cellsmith's prediction: STATE's cells of the held-out perturbations, then
    # the held-out controls as given (log1p(CP10k)).
    source_data = read(source)
    is_control = source_data.obs["gene"].astype(str).to_numpy() == model.control_label
    values = np.vstack([np.asarray(state.X[~is_control]), source_data.X[is_control].toarray()]).astype(np.float32)
    values = np.clip(values, 0.0, None)  # STATE's output can go below 0; cellsmith's baselines clip too
    labels = np.concatenate(
        [state.obs["gene"].astype(str).to_numpy()[~is_control], np.repeat(model.control_label, is_control.sum())]
    )
    pred = ad.AnnData(
        X=values,
        obs=pd.DataFrame(
            {model.perturbation_key: pd.Categorical(labels)}, index=[f"state{i}" for i in range(labels.size)]
        ),
        var=pd.DataFrame(index=list(model.genespace.names)),
    )
    pred.uns["cellsmith"] = {
        "perturbation": {
            "genespace_digest": model.genespace.digest,
            "perturbation_key": model.perturbation_key,
            "control_label": model.control_label,
            "counts_layer": model.counts_layer,
            "pretrained": False,
        }
    }
    evaluation = run_evaluate(pred, read(args.model / HELDOUT_REAL), args.out / "eval", baselines_from=args.model)
    name = f"STATE (state_sm shape, hidden {args.width}, {args.max_steps} steps)"
    summary = evaluation.summary.rename(index={"model": name})
    timing = {
        "state tx train (s)": train_seconds,
        "state tx infer (s)": infer_seconds,
        "max_steps": args.max_steps,
        "hidden_dim": args.width,
    }
    (args.out / "timing.json").write_text(json.dumps(timing))
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    if not evaluation.by_category.empty:
        print(evaluation.by_category.rename(index={"model": name}).to_string(float_format=lambda v: f"{v:.4f}"))
    print(json.dumps(timing))


if __name__ == "__main__":
    main()
