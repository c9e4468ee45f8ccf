"""Shared fixtures: tiny simulated data, and the public data folder (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_file():
    """Return a function giving the path of a file in ../shared/data, skipping when absent."""

    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_file():
            pytest.skip(f"needs {path} (the shared public datasets are not beside this clone)")
        return path

    return get


@pytest.fixture(scope="session")
def small_cells():
    """800 simulated cells x 300 genes with cell types, donors and timepoints."""
    from cellsmith.data import simulate

    return simulate.singlecell(
        800, 300, cell_types=3, donors=2, timepoints=("0h", "24h"), seed=0
    )


@pytest.fixture(scope="session")
def small_screen():
    """1,500 simulated cells x 200 genes of a screen with 8 targets."""
    from cellsmith.data import simulate

    return simulate.singlecell(1500, 200, cell_types=1, donors=2, perturbations=8, seed=1)


class _CreatesFile:
    """Unpickling this creates the file ``path``: what a malicious model folder would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def code_running_payload():
    """``payload(path)``: an object whose unpickling creates ``path`` (pickle it as needed)."""
    return _CreatesFile
