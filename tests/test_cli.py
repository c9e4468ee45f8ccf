import json
import subprocess
import sys

import anndata as ad

from cellsmith.data import normalize


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "cellsmith.cli", *map(str, args)], capture_output=True, text=True
    )


def test_audit_command_and_require(tmp_path, small_cells):
    counts = tmp_path / "counts.h5ad"
    small_cells.write_h5ad(counts)
    result = run_cli("audit", counts, "--require", "counts", "--json", tmp_path / "a.json")
    assert result.returncode == 0, result.stderr
    assert "COUNTS" in result.stdout
    assert json.loads((tmp_path / "a.json").read_text())["matrices"]["X"]["scale"] == "counts"

    logged = ad.AnnData(X=normalize.log1p_normalize(small_cells.X), var=small_cells.var)
    logged.write_h5ad(tmp_path / "log.h5ad")
    result = run_cli("audit", tmp_path / "log.h5ad", "--require", "counts")
    assert result.returncode == 2
    assert result.stderr.startswith("error: X of")
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_clean_error(tmp_path):
    result = run_cli("audit", tmp_path / "absent.h5ad")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    verbose = run_cli("--verbose", "audit", tmp_path / "absent.h5ad")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_genes_hvg_command(tmp_path, small_screen):
    path = tmp_path / "screen.h5ad"
    small_screen.write_h5ad(path)
    result = run_cli(
        "genes", "hvg", "--dataset", f"screen={path}", "--n-top", 50,
        "--priority-genes-from", "screen:target_gene", "--out", tmp_path / "hvg",
    )
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "hvg" / "cross_dataset_hvg_info.json").read_text())
    assert set(info["priority_genes_included"]) == set(small_screen.uns["simulation"]["targets"])
    assert "priority genes kept 8/8" in result.stdout


def _command_paths(group, prefix=()):
    yield prefix
    for name, command in getattr(group, "commands", {}).items():
        yield from _command_paths(command, (*prefix, name))


def test_every_help_shows_no_python_types():
    """Flags show no value type (`<bool>`), repeatable options their element (`<path> (repeat)`)."""
    import typer
    from typer.testing import CliRunner

    from cellsmith.cli import app

    paths = list(_command_paths(typer.main.get_command(app)))
    assert len(paths) > 15
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output and "<list[" not in result.output, (path, result.output)
    perturb = CliRunner().invoke(app, ["perturb", "pretrain", "--help"], terminal_width=200).output
    assert "<path> (repeat)" in perturb


def test_progress_only_on_a_terminal_and_counts_printed_as_integers(capsys, monkeypatch):
    import pandas as pd

    from cellsmith.cli_options import steps, table_text

    with steps(True) as step:  # pytest's stderr is not a terminal: quiet, as in CI logs
        step("reconstructing 1,000 cells")
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    with steps(False) as step:  # --no-progress
        step("reconstructing 1,000 cells")
    assert capsys.readouterr().err == ""
    pooled = pd.DataFrame({"pearson": [0.91234567], "n": [8.0]}, index=["HP-VADE"])
    assert table_text(pooled).splitlines()[1].split() == ["HP-VADE", "0.9123", "8"]
