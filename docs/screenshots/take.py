"""Screenshots of cellsmith's HTML reports at 1400 px in headless Chromium.

    python docs/screenshots/take.py [--demo DEMO_DIR] [--work DIR] [--out docs/screenshots]

Runs every workflow's commands on small simulated data (a few minutes on 2 cores), then writes
one PNG per report (``demo.png`` too when ``--demo`` names the folder of ``cellsmith demo``).
Pages are shot at their full height; a PNG is reduced to 256 colours, and split in parts when
it would still be over 1 MB. Needs ``chromium`` on PATH (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

WIDTH = 1400
MAX_BYTES = 1_000_000


def cellsmith(*args: object) -> None:
    """Run one command as a user does; stop on failure with its output."""
    command = [sys.executable, "-m", "cellsmith.cli", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


def workflow_reports(work: Path) -> dict[str, Path]:
    """Small runs of each workflow's commands; their report.html files by name."""
    from cellsmith.data import simulate

    cells = simulate.singlecell(600, 200, cell_types=("B", "T", "NK"), donors=2, timepoints=("0h", "24h"), seed=0)
    cells.write_h5ad(work / "cells.h5ad")
    bulk = simulate.bulk(cells, 40, cells_per_sample=200, seed=1)
    pd.DataFrame(bulk.X.T, index=bulk.var_names, columns=bulk.obs_names).to_csv(work / "bulk.csv")
    bulk.obsm["proportions"].to_csv(work / "truth.csv")
    config = {"n_marker_genes": None, "n_train_samples": 512, "n_val_samples": 128, "cells_per_sample": 100,
              "max_epochs": 8, "batch_size": 64, "progress_bar": False}
    (work / "deconv.yaml").write_text(yaml.safe_dump(config))
    cellsmith("deconvolve", "train", "--reference", work / "cells.h5ad", "--cell-type-key", "cell_type",
              "--config", work / "deconv.yaml", "--out", work / "deconv_model")
    # Pseudo-bulks of the reference's own cells: each type keeps its reference counts per cell.
    cellsmith("deconvolve", "predict", "--model", work / "deconv_model", "--bulk", work / "bulk.csv",
              "--mrna-content", "reference", "--out", work / "props.csv")
    cellsmith("deconvolve", "evaluate", "--pred", work / "props.csv", "--truth", work / "truth.csv",
              "--model", work / "deconv_model", "--out", work / "deconv_eval")

    (work / "scvi.yaml").write_text("max_epochs: 8\nn_hidden: 32\nn_latent: 4\nprogress_bar: false\n")
    cellsmith("scvi", "train", "--data", work / "cells.h5ad", "--covariate-key", "timepoint",
              "--config", work / "scvi.yaml", "--out", work / "scvi_model")
    cellsmith("scvi", "reconstruct", "--model", work / "scvi_model", "--data", work / "cells.h5ad",
              "--out", work / "scvi_rec", "--no-progress")

    screen = simulate.singlecell(1500, 150, cell_types=1, donors=2, perturbations=12, control_fraction=0.3, seed=3)
    screen.write_h5ad(work / "screen.h5ad")
    cellsmith("retrieve", "run", "--data", work / "screen.h5ad", "--embedders", "pca,logreg",
              "--query", "cell,pseudobulk:20", "--out", work / "retrieval")

    targets = sorted(set(screen.obs["target_gene"].astype(str)) - {"non-targeting"})
    cellsmith("genes", "hvg", "--dataset", f"screen={work / 'screen.h5ad'}", "--n-top", 100,
              "--priority-genes-from", "screen:target_gene", "--out", work / "hvg")
    (work / "perturb.yaml").write_text("max_epochs: 3\nsteps_per_epoch: 4\nbatch_size: 4\nset_size: 16\nhidden: 16\n"
                                       "progress_bar: false\n")
    cellsmith("perturb", "finetune", "--data", work / "screen.h5ad", "--genes", work / "hvg",
              "--config", work / "perturb.yaml", "--out", work / "perturb_model")
    split = yaml.safe_load((work / "perturb_model" / "split.json").read_text())
    cellsmith("perturb", "predict", "--model", work / "perturb_model", "--controls",
              work / "perturb_model" / "heldout_controls.h5ad", "--targets", ",".join(split["test_targets"] or targets),
              "--cells-per-target", 30, "--out", work / "pred.h5ad")
    cellsmith("perturb", "evaluate", "--pred", work / "pred.h5ad", "--real", work / "perturb_model" / "heldout_real.h5ad",
              "--baselines", "--out", work / "perturb_eval")
    return {
        "deconvolution": work / "deconv_eval" / "report.html",
        "scvi": work / "scvi_rec" / "report.html",
        "retrieval": work / "retrieval" / "report.html",
        "perturbation": work / "perturb_eval" / "report.html",
    }


def page_height(page: Path, chromium: str) -> int:
    """The page's full height at WIDTH px, measured by a script whose result Chromium dumps."""
    probe = page.with_name(f".{page.stem}.height.html")
    script = "<script>document.title='height:'+document.documentElement.scrollHeight</script>"
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    try:
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},900",
                              "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    finally:
        probe.unlink()
    return int(re.search(r"<title>height:(\d+)</title>", dom).group(1))


def screenshot(page: Path, png: Path, chromium: str) -> list[Path]:
    """A full-height PNG of ``page`` (256 colours; in parts when over MAX_BYTES)."""
    from PIL import Image

    height = page_height(page, chromium)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={WIDTH},{height}", f"--screenshot={raw}", page.as_uri()],
                       capture_output=True, timeout=180, check=True)
        image = Image.open(raw).convert("RGB").quantize(colors=256)
        for n_parts in range(1, 20):
            step = -(-image.height // n_parts)
            paths = [png if n_parts == 1 else png.with_name(f"{png.stem}_{i + 1}.png") for i in range(n_parts)]
            for i, path in enumerate(paths):
                image.crop((0, i * step, image.width, min(image.height, (i + 1) * step))).save(path, optimize=True)
            if all(p.stat().st_size < MAX_BYTES for p in paths):
                return paths
            for path in paths:
                path.unlink()
    raise RuntimeError(f"{page} does not fit in PNGs under {MAX_BYTES:,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="Folder written by `cellsmith demo` (its report.html).")
    parser.add_argument("--work", type=Path, help="Keep the small runs here (default: a temporary folder).")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--skip-workflows", action="store_true", help="Only the demo report.")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not on PATH (apt-get install chromium).")
    pages = {} if args.demo is None else {"demo": args.demo / "report.html"}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_workflows:
            pages.update(workflow_reports(work))
        for name, page in pages.items():
            for path in screenshot(page, args.out / f"{name}.png", chromium):
                print(f"{path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
