"""Malformed inputs, every file type and every command: exit 2, no traceback, nothing written.

Each case runs the console script's ``main`` in this process (no start-up cost) with its output
under an empty folder, then checks the exit status, the message (it names
the file and what was found) and that the folder is still empty: no output, no temporary folder.
"""

from __future__ import annotations

import gzip
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cellsmith.cli import main
from cellsmith.data import cross_dataset_hvg, simulate


def _write_inputs(root: Path) -> None:
    """Valid inputs (the malformed ones are derived from them) and tiny trained models."""
    from cellsmith.deconvolution.config import DeconvolutionConfig
    from cellsmith.deconvolution.model import Deconvolver
    from cellsmith.scvi import ConditionalSCVI, SCVIConfig

    cells = simulate.singlecell(160, 60, cell_types=("A", "B"), donors=2, timepoints=("0h", "24h"), seed=0)
    screen = simulate.singlecell(300, 60, cell_types=1, donors=2, perturbations=4, control_fraction=0.4, seed=1)
    cells.write_h5ad(root / "cells.h5ad")
    screen.write_h5ad(root / "screen.h5ad")
    cross_dataset_hvg({"cells": cells}, n_top=40).write(root / "hvg")
    Deconvolver(DeconvolutionConfig(
        n_marker_genes=None, n_train_samples=32, n_val_samples=16, cells_per_sample=20, max_steps=2,
        batch_size=16, deconv_hidden=[8], vae_hidden=[8], n_latent=2, progress_bar=False, accelerator="cpu",
    )).train(cells, cell_type_key="cell_type").save(root / "deconv_model")
    ConditionalSCVI(SCVIConfig(
        max_steps=2, n_hidden=8, n_latent=2, batch_size=64, progress_bar=False, accelerator="cpu",
    )).train(cells, batch_key="donor_id").save(root / "scvi_model")

    def variant(name: str, adata: ad.AnnData) -> None:
        adata.write_h5ad(root / name)

    variant("zero_cells.h5ad", cells[:0].copy())
    variant("zero_genes.h5ad", cells[:, :0].copy())
    for name, data in (("dup_genes.h5ad", cells), ("dup_screen.h5ad", screen)):
        dup = data.copy()
        dup.var_names = [dup.var_names[1], *dup.var_names[1:]]
        variant(name, dup)
    one_type = cells.copy()
    one_type.obs["cell_type"] = "A"
    variant("one_type.h5ad", one_type)
    zero = cells.copy()
    zero.X = sp.csr_matrix(zero.shape, dtype=np.float32)
    variant("all_zero.h5ad", zero)
    no_donor = cells.copy()
    del no_donor.obs["donor_id"]
    variant("no_donor.h5ad", no_donor)

    whole = (root / "cells.h5ad").read_bytes()
    (root / "truncated.h5ad").write_bytes(whole[: len(whole) // 2])
    (root / "empty.h5ad").write_bytes(b"")
    (root / "text.h5ad").write_text("gene,s1\nA,1\n")
    (root / "empty.h5").write_bytes(b"")
    (root / "text.h5").write_text("not hdf5\n")
    (root / "hdf5_not_10x.h5").write_bytes(whole)
    (root / "empty_folder").mkdir()
    (root / "bad_mtx").mkdir()
    with gzip.open(root / "bad_mtx" / "matrix.mtx.gz", "wt") as handle:
        handle.write("%%MatrixMarket matrix coordinate integer general\n3 3 1\n1 1 oops\n")
    (root / "data.xyz").write_text("a b c\n")

    genes = list(cells.var_names[:8])
    good_rows = "\n".join(f"{g},{i},{i + 1},{i + 2}" for i, g in enumerate(genes))
    (root / "empty.csv").write_bytes(b"")
    (root / "blank.csv").write_text("\n\n\n")
    (root / "header_only.csv").write_text("gene,s1,s2\n")
    (root / "names_only.csv").write_text("gene\n" + "\n".join(genes) + "\n")
    (root / "ragged.csv").write_text("gene,s1,s2\n" + genes[0] + ",1,2,3,4,5\n" + genes[1] + ",1\n")
    (root / "binary.csv").write_bytes(np.random.default_rng(0).bytes(2000))
    (root / "prose.txt").write_text("This is a note about the samples.\nIt is not a table at all.\n")
    (root / "nan.csv").write_text("gene,s1,s2,s3\n" + good_rows + "\n" + genes[0] + "x,1,,3\n")
    (root / "dup_genes.csv").write_text("gene,s1,s2,s3\n" + good_rows + "\n" + f"{genes[0]},1,2,3\n")
    (root / "dup_columns.csv").write_text("gene,s1,s1,s2\n" + good_rows + "\n")
    (root / "text_values.csv").write_text("gene,s1,s2,s3\n" + good_rows.replace(",1,", ",one,") + "\n")
    (root / "numbers_first.csv").write_text("id,s1,s2\n1,2,3\n2,3,4\n3,4,5\n")
    (root / "pipe_separated.txt").write_text("gene|s1|s2\n" + "\n".join(f"{g}|1|2" for g in genes) + "\n")
    (root / "truth_names_only.csv").write_text("sample\ns1\ns2\n")
    all_genes = list(cells.var_names)
    (root / "other_ids.csv").write_text("gene,s1,s2\n" + "\n".join(f"ENSG{i:011d},1,2" for i in range(40)) + "\n")
    (root / "zero_sample.csv").write_text("gene,s1,s2\n" + "\n".join(f"{g},{i + 1},0" for i, g in enumerate(all_genes)) + "\n")
    (root / "dup_samples.csv").write_text(
        "sample," + ",".join(all_genes) + "\n" + "".join(f"s1,{','.join(['3'] * len(all_genes))}\n" for _ in range(2))
    )
    (root / "props.csv").write_text("sample,A,B\ns1,0.5,0.5\ns2,0.2,0.8\ns3,0.9,0.1\n")

    (root / "bad.yaml").write_text("max_epochs: [1, 2\nseed: 0\n")
    (root / "list.yaml").write_text("- max_epochs\n- 2\n")
    (root / "empty.yaml").write_bytes(b"")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81" * 50)
    (root / "not_a_model").write_text("weights\n")
    shutil.copytree(root / "hvg", root / "hvg_broken")
    (root / "hvg_broken" / "cross_dataset_hvg_info.json").write_text("{not json")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz_inputs")
    _write_inputs(root)
    return root


DECON_TRAIN = ["deconvolve", "train", "--cell-type-key", "cell_type", "--no-progress"]
SCVI_TRAIN = ["scvi", "train", "--max-steps", "1"]
DECON_RUN = ["deconvolve", "run", "--cell-type-key", "cell_type", "--no-progress"]

# (id, command line with {in} = the inputs folder and {out} = the output path, words the message holds)
CASES = [
    # audit: every format `read` accepts
    ("audit-missing", ["audit", "{in}/absent.h5ad"], "does not exist"),
    ("audit-empty-h5ad", ["audit", "{in}/empty.h5ad"], "empty file"),
    ("audit-truncated-h5ad", ["audit", "{in}/truncated.h5ad"], "truncated"),
    ("audit-text-as-h5ad", ["audit", "{in}/text.h5ad"], "not an .h5ad"),
    ("audit-zero-cells", ["audit", "{in}/zero_cells.h5ad"], "0 cells"),
    ("audit-zero-genes", ["audit", "{in}/zero_genes.h5ad"], "0 genes"),
    ("audit-empty-h5", ["audit", "{in}/empty.h5"], "empty file"),
    ("audit-text-as-h5", ["audit", "{in}/text.h5"], "10x .h5"),
    ("audit-h5ad-as-10x-h5", ["audit", "{in}/hdf5_not_10x.h5"], "10x .h5"),
    ("audit-empty-folder", ["audit", "{in}/empty_folder"], "not a 10x matrix folder"),
    ("audit-broken-mtx", ["audit", "{in}/bad_mtx"], "10x matrix folder"),
    ("audit-unknown-suffix", ["audit", "{in}/data.xyz"], "unknown format"),
    ("audit-empty-csv", ["audit", "{in}/empty.csv"], "empty file"),
    ("audit-blank-csv", ["audit", "{in}/blank.csv"], "blank lines"),
    ("audit-binary-csv", ["audit", "{in}/binary.csv"], "not a text table"),
    ("audit-json-missing", ["audit", "{in}/cells.h5ad", "--require", "log"], "--require"),
    # deconvolve train: reference, --genes-from bulk, --config
    ("decon-train-zero-cells", [*DECON_TRAIN, "--reference", "{in}/zero_cells.h5ad", "--out", "{out}"], "0 cells"),
    ("decon-train-dup-genes", [*DECON_TRAIN, "--reference", "{in}/dup_genes.h5ad", "--out", "{out}"], "var_names_make_unique"),
    ("decon-train-one-type", [*DECON_TRAIN, "--reference", "{in}/one_type.h5ad", "--out", "{out}"], "1 cell type"),
    ("decon-train-all-zero", [*DECON_TRAIN, "--reference", "{in}/all_zero.h5ad", "--out", "{out}"], "only zeros"),
    ("decon-train-truncated", [*DECON_TRAIN, "--reference", "{in}/truncated.h5ad", "--out", "{out}"], "truncated"),
    ("decon-train-backed-empty", [*DECON_TRAIN, "--reference", "{in}/empty.h5ad", "--backed", "--out", "{out}"], "empty file"),
    ("decon-train-genes-from-empty", [*DECON_TRAIN, "--reference", "{in}/cells.h5ad", "--genes-from", "{in}/empty.csv", "--out", "{out}"], "empty file"),
    ("decon-train-bad-yaml", [*DECON_TRAIN, "--reference", "{in}/cells.h5ad", "--config", "{in}/bad.yaml", "--out", "{out}"], "line 2"),
    ("decon-train-list-yaml", [*DECON_TRAIN, "--reference", "{in}/cells.h5ad", "--config", "{in}/list.yaml", "--out", "{out}"], "not a mapping"),
    ("decon-train-binary-yaml", [*DECON_TRAIN, "--reference", "{in}/cells.h5ad", "--config", "{in}/binary.yaml", "--out", "{out}"], "not a text file"),
    # deconvolve run: reference + bulk in one step (issue 12)
    ("decon-run-bulk-empty", [*DECON_RUN, "--reference", "{in}/cells.h5ad", "--bulk", "{in}/empty.csv", "--out", "{out}"], "empty file"),
    ("decon-run-bulk-ragged", [*DECON_RUN, "--reference", "{in}/cells.h5ad", "--bulk", "{in}/ragged.csv", "--out", "{out}"], "different numbers of fields"),
    ("decon-run-bulk-dup-genes", [*DECON_RUN, "--reference", "{in}/cells.h5ad", "--bulk", "{in}/dup_genes.csv", "--out", "{out}"], "duplicated gene names"),
    ("decon-run-reference-truncated", [*DECON_RUN, "--reference", "{in}/truncated.h5ad", "--bulk", "{in}/nan.csv", "--out", "{out}"], "truncated"),
    ("decon-run-no-shared-genes", [*DECON_RUN, "--reference", "{in}/cells.h5ad", "--bulk", "{in}/other_ids.csv", "--out", "{out}"], "has 0 of the 40 genes to train on"),
    ("decon-run-sample-without-expression", [*DECON_RUN, "--reference", "{in}/cells.h5ad", "--bulk", "{in}/zero_sample.csv", "--out", "{out}"], "samples ['s2'] have no expression"),
    ("decon-run-dup-samples", [*DECON_RUN, "--reference", "{in}/cells.h5ad", "--bulk", "{in}/dup_samples.csv", "--out", "{out}"], "repeats sample names ['s1']"),
    ("decon-predict-dup-samples", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/dup_samples.csv", "--out", "{out}.csv"], "repeats sample names"),
    ("decon-run-bad-orientation", [*DECON_RUN, "--reference", "{in}/cells.h5ad", "--bulk", "{in}/dup_genes.csv", "--orientation", "rows", "--out", "{out}"], "--orientation"),
    # deconvolve predict: --model folder, --bulk table
    ("decon-predict-model-missing", ["deconvolve", "predict", "--model", "{in}/absent", "--bulk", "{in}/names_only.csv", "--out", "{out}.csv"], "absent"),
    ("decon-predict-model-empty", ["deconvolve", "predict", "--model", "{in}/empty_folder", "--bulk", "{in}/names_only.csv", "--out", "{out}.csv"], "empty_folder"),
    ("decon-predict-model-is-file", ["deconvolve", "predict", "--model", "{in}/not_a_model", "--bulk", "{in}/names_only.csv", "--out", "{out}.csv"], "is a file, not a model folder"),
    ("decon-predict-names-only", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/names_only.csv", "--out", "{out}.csv"], "no values"),
    ("decon-predict-header-only", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/header_only.csv", "--out", "{out}.csv"], "no values"),
    ("decon-predict-ragged", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/ragged.csv", "--out", "{out}.csv"], "different numbers of fields"),
    ("decon-predict-prose", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/prose.txt", "--out", "{out}.csv"], "prose.txt"),
    ("decon-predict-pipes", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/pipe_separated.txt", "--out", "{out}.csv"], "no values"),
    ("decon-predict-mrna-content-missing", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/pipe_separated.txt", "--mrna-content", "{in}/absent.yaml", "--out", "{out}.csv"], "absent.yaml"),
    ("decon-predict-mrna-content-prose", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/pipe_separated.txt", "--mrna-content", "{in}/prose.txt", "--out", "{out}.csv"], "prose.txt"),
    ("decon-predict-nan", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/nan.csv", "--out", "{out}.csv"], "NA values"),
    ("decon-predict-dup-genes", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/dup_genes.csv", "--out", "{out}.csv"], "duplicated gene names"),
    ("decon-predict-dup-columns", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/dup_columns.csv", "--out", "{out}.csv"], "repeats column names"),
    ("decon-predict-text-values", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/text_values.csv", "--out", "{out}.csv"], "non-numeric"),
    ("decon-predict-numbers-first", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/numbers_first.csv", "--out", "{out}.csv"], "holds numbers"),
    ("decon-predict-truncated-h5ad", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/truncated.h5ad", "--out", "{out}.csv"], "truncated"),
    ("decon-predict-bad-orientation", ["deconvolve", "predict", "--model", "{in}/deconv_model", "--bulk", "{in}/dup_genes.csv", "--orientation", "rows", "--out", "{out}.csv"], "--orientation"),
    # deconvolve evaluate: predictions, truth, mapping YAML, model folder
    ("decon-eval-pred-empty", ["deconvolve", "evaluate", "--pred", "{in}/empty.csv", "--truth", "{in}/props.csv", "--out", "{out}"], "empty file"),
    ("decon-eval-pred-dup-columns", ["deconvolve", "evaluate", "--pred", "{in}/dup_columns.csv", "--truth", "{in}/props.csv", "--out", "{out}"], "repeats column names"),
    ("decon-eval-truth-names-only", ["deconvolve", "evaluate", "--pred", "{in}/props.csv", "--truth", "{in}/truth_names_only.csv", "--out", "{out}"], "no values"),
    ("decon-eval-truth-truncated-h5ad", ["deconvolve", "evaluate", "--pred", "{in}/props.csv", "--truth", "{in}/truncated.h5ad", "--truth-key", "p", "--out", "{out}"], "truncated"),
    ("decon-eval-truth-text-values", ["deconvolve", "evaluate", "--pred", "{in}/props.csv", "--truth", "{in}/text_values.csv", "--out", "{out}"], "non-numeric"),
    ("decon-eval-map-bad-yaml", ["deconvolve", "evaluate", "--pred", "{in}/props.csv", "--truth", "{in}/props.csv", "--map", "{in}/bad.yaml", "--out", "{out}"], "not valid YAML"),
    ("decon-eval-model-empty", ["deconvolve", "evaluate", "--pred", "{in}/props.csv", "--truth", "{in}/props.csv", "--model", "{in}/empty_folder", "--out", "{out}"], "empty_folder"),
    # scvi train / reconstruct / predict
    ("scvi-train-empty", [*SCVI_TRAIN, "--data", "{in}/empty.h5ad", "--out", "{out}"], "empty file"),
    ("scvi-train-no-batch-column", [*SCVI_TRAIN, "--data", "{in}/no_donor.h5ad", "--out", "{out}"], "--no-batch"),
    ("scvi-train-dup-genes", [*SCVI_TRAIN, "--data", "{in}/dup_genes.h5ad", "--no-batch", "--out", "{out}"], "var_names_make_unique"),
    ("scvi-train-all-zero", [*SCVI_TRAIN, "--data", "{in}/all_zero.h5ad", "--no-batch", "--out", "{out}"], "only zeros"),
    ("scvi-train-bad-yaml", [*SCVI_TRAIN, "--data", "{in}/cells.h5ad", "--config", "{in}/bad.yaml", "--out", "{out}"], "not valid YAML"),
    ("scvi-train-backed-truncated", [*SCVI_TRAIN, "--data", "{in}/truncated.h5ad", "--backed", "--out", "{out}"], "truncated"),
    ("scvi-reconstruct-model-empty", ["scvi", "reconstruct", "--model", "{in}/empty_folder", "--data", "{in}/cells.h5ad", "--out", "{out}"], "empty_folder"),
    ("scvi-reconstruct-truncated", ["scvi", "reconstruct", "--model", "{in}/scvi_model", "--data", "{in}/truncated.h5ad", "--out", "{out}"], "truncated"),
    ("scvi-reconstruct-zero-cells", ["scvi", "reconstruct", "--model", "{in}/scvi_model", "--data", "{in}/zero_cells.h5ad", "--out", "{out}"], "0 cells"),
    ("scvi-predict-text-h5ad", ["scvi", "predict", "--model", "{in}/scvi_model", "--data", "{in}/text.h5ad", "--set", "donor_id=x", "--out", "{out}.h5ad"], "not an .h5ad"),
    # perturb: gene space folder, data, configs
    ("perturb-pretrain-genes-missing", ["perturb", "pretrain", "--data", "{in}/cells.h5ad", "--genes", "{in}/absent", "--out", "{out}"], "absent"),
    ("perturb-pretrain-genes-broken", ["perturb", "pretrain", "--data", "{in}/cells.h5ad", "--genes", "{in}/hvg_broken", "--out", "{out}"], "hvg_broken"),
    ("perturb-pretrain-data-empty", ["perturb", "pretrain", "--data", "{in}/empty.h5ad", "--genes", "{in}/hvg", "--out", "{out}"], "empty file"),
    ("perturb-finetune-truncated", ["perturb", "finetune", "--data", "{in}/truncated.h5ad", "--genes", "{in}/hvg", "--out", "{out}"], "truncated"),
    ("perturb-finetune-bad-yaml", ["perturb", "finetune", "--data", "{in}/screen.h5ad", "--genes", "{in}/hvg", "--config", "{in}/bad.yaml", "--out", "{out}"], "not valid YAML"),
    ("perturb-predict-model-empty", ["perturb", "predict", "--model", "{in}/empty_folder", "--controls", "{in}/screen.h5ad", "--targets", "G1", "--out", "{out}.h5ad"], "empty_folder"),
    ("perturb-predict-controls-text", ["perturb", "predict", "--model", "{in}/empty_folder", "--controls", "{in}/text.h5ad", "--targets", "G1", "--out", "{out}.h5ad"], "not an .h5ad"),
    ("perturb-evaluate-pred-empty", ["perturb", "evaluate", "--pred", "{in}/empty.h5ad", "--real", "{in}/screen.h5ad", "--out", "{out}"], "empty file"),
    ("perturb-evaluate-real-zero-genes", ["perturb", "evaluate", "--pred", "{in}/screen.h5ad", "--real", "{in}/zero_genes.h5ad", "--out", "{out}"], "0 genes"),
    # retrieve run
    ("retrieve-empty", ["retrieve", "run", "--data", "{in}/empty.h5ad", "--out", "{out}"], "empty file"),
    ("retrieve-truncated-backed", ["retrieve", "run", "--data", "{in}/truncated.h5ad", "--backed", "--out", "{out}"], "truncated"),
    ("retrieve-bad-yaml", ["retrieve", "run", "--data", "{in}/screen.h5ad", "--config", "{in}/bad.yaml", "--out", "{out}"], "not valid YAML"),
    ("retrieve-empty-yaml", ["retrieve", "run", "--data", "{in}/screen.h5ad", "--config", "{in}/empty.yaml", "--out", "{out}"], "empty file"),
    ("retrieve-dup-genes", ["retrieve", "run", "--data", "{in}/dup_screen.h5ad", "--out", "{out}"], "var_names_make_unique"),
    # output folders that must never be replaced as a whole
    ("demo-out-not-a-demo-folder", ["demo", "--out", "{in}"], "holds files but no demo report"),
    ("decon-eval-out-root", ["deconvolve", "evaluate", "--pred", "{in}/props.csv", "--truth", "{in}/props.csv", "--out", "/"], "a folder above it"),
    # genes hvg
    ("hvg-dataset-empty", ["genes", "hvg", "--dataset", "a={in}/empty.h5ad", "--out", "{out}"], "empty file"),
    ("hvg-dataset-dup-genes", ["genes", "hvg", "--dataset", "a={in}/dup_genes.h5ad", "--out", "{out}"], "var_names_make_unique"),
    ("hvg-dataset-10x-folder-empty", ["genes", "hvg", "--dataset", "a={in}/empty_folder", "--out", "{out}"], "not a 10x matrix folder"),
]


@pytest.mark.parametrize(("args", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_refused_cleanly(inputs, tmp_path, monkeypatch, capsys, args, words):
    out = tmp_path / "out"
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in args]
    before = sorted(p.name for p in inputs.iterdir())
    monkeypatch.setattr(sys, "argv", ["cellsmith", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()  # in this process, with the console script's error handling
    output = "".join(capsys.readouterr())
    assert exit_info.value.code == 2, output
    assert "Traceback" not in output
    assert "error: " in output
    assert words in " ".join(output.split()), output
    assert list(tmp_path.iterdir()) == [], "output or a temporary folder was left behind"
    assert sorted(p.name for p in inputs.iterdir()) == before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_command_leaves_nothing_half_written(inputs, tmp_path, signum):
    """A real run, interrupted once it has started writing its output: nothing is left behind."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "cellsmith.cli", "retrieve", "run", "--data", str(inputs / "screen.h5ad"),
               "--embedders", "head:pca", "--max-epochs", "500", "--out", str(out)]
    # A shell starts background jobs with SIGINT ignored, and Python then never turns it into
    # KeyboardInterrupt: give the child the default disposition, as a terminal would.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not any(tmp_path.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the temporary output folder exists: the run is writing
    time.sleep(0.5)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signum)
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0, output
    assert list(tmp_path.iterdir()) == [], f"left behind: {list(tmp_path.iterdir())}\n{output}"


def test_an_interrupt_swallowed_by_a_finalizer_still_stops_every_writer(tmp_path, monkeypatch):
    """Ctrl-C that lands in a finalizer is printed and ignored by Python (seen once in CI: the run
    went on and wrote its outputs); the recorded signal still keeps every atomic writer from
    moving anything into place."""
    import torch

    from cellsmith import _interrupt
    from cellsmith.config import CellsmithConfig
    from cellsmith.nn.saving import write_model_dir
    from cellsmith.report import atomic_output_dir, write_atomic

    monkeypatch.setattr(_interrupt, "_received", None)
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)  # Python's "Exception ignored in ..."

    class Collected:
        def __del__(self):
            _interrupt._handle(signal.SIGINT, None)  # the handler, as when the signal lands here

    Collected()
    assert [type(event.exc_value) for event in ignored] == [KeyboardInterrupt]
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(tmp_path / "run") as tmp:
            (tmp / "metrics.csv").write_text("x\n")
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "table.csv", lambda path: path.write_text("x\n"))
    with pytest.raises(KeyboardInterrupt):
        write_model_dir(tmp_path / "model", workflow="w", model_class="M", config=CellsmithConfig(), setup={},
                        weights={"w": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []
