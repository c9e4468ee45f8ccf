#!/usr/bin/env bash
# Make the venv of a benchmark peer, never the project's own: scvi-tools (default) beside the
# same CPU build of torch that constraints.txt pins (any other torch pulls CUDA wheels).
#   bash benchmarks/make_peer_venv.sh [scvi|scgpt|state] [VENV_DIR]
# scgpt: scGPT 0.2.4 (the reference of tests/test_scgpt_model.py, see make_scgpt_fixture.py)
# needs torchtext 0.18, which needs torch 2.3. PyPI's torch 2.3.1 is a CUDA build: without its
# nvidia-* wheels it does not import even on CPU (libcublas not found), so they come too
# (about 2.3 GB of downloads, a 6 GB venv). scgpt itself goes in --no-deps (it pins
# scvi-tools<1.0); its imports need scanpy, datasets, IPython and requests, on numpy 1.
# state: Arc Institute's STATE (arc-state, torch >= 2.7), for benchmarks/perturbation_state.py.
set -euo pipefail
peer="${1:-scvi}"
here="$(cd "$(dirname "$0")/.." && pwd)"
case "$peer" in
  scvi) venv="${2:-/tmp/venv-scvi}"; packages=("scvi-tools>=1.4,<1.5") ;;
  scgpt) venv="${2:-/tmp/venv-scgpt}" ;;
  state) venv="${2:-/tmp/venv-state}"; packages=("arc-state==0.11.1") ;;
  *) echo "unknown peer '$peer' (known: scvi, scgpt, state)" >&2; exit 2 ;;
esac
python="$(command -v python3.11 || command -v python3)"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
if [ "$peer" = scgpt ]; then
  "$venv/bin/python" -m pip install --quiet torch==2.3.1 "numpy<2" "scanpy>=1.9,<1.11" "pandas<2.3" "anndata<0.11" \
    "datasets<3" "pyarrow<16" ipython requests
  "$venv/bin/python" -m pip install --quiet --no-deps torchtext==0.18.0 scgpt==0.2.4
  "$venv/bin/python" -c "import scgpt, torch; print('scgpt', scgpt.__version__, 'torch', torch.__version__)"
  du -sh "$venv"
  exit 0
fi
"$venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" torch
"$venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" "${packages[@]}"
case "$peer" in
  scvi) "$venv/bin/python" -c "import scvi, torch; print('scvi-tools', scvi.__version__, 'torch', torch.__version__)" ;;
  state) "$venv/bin/python" -c "import importlib.metadata as m, torch, state; print('arc-state', m.version('arc-state'), 'torch', torch.__version__)" ;;
esac
