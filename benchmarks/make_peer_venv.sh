#!/usr/bin/env bash
# Make the venv of a benchmark peer, never the project's own: scvi-tools (default) beside the
# same CPU build of torch that constraints.txt pins (any other torch pulls CUDA wheels).
# state: Arc Institute's STATE (arc-state, torch >= 2.7), for benchmarks/perturbation_state.py.
#   bash benchmarks/make_peer_venv.sh [scvi|state] [VENV_DIR]
set -euo pipefail
peer="${1:-scvi}"
here="$(cd "$(dirname "$0")/.." && pwd)"
case "$peer" in
  scvi) venv="${2:-/tmp/venv-scvi}"; packages=("scvi-tools>=1.4,<1.5") ;;
  state) venv="${2:-/tmp/venv-state}"; packages=("arc-state==0.11.1") ;;
  *) echo "unknown peer '$peer' (known: scvi, state)" >&2; exit 2 ;;
esac
python="$(command -v python3.11 || command -v python3)"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" torch
"$venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" "${packages[@]}"
case "$peer" in
  scvi) "$venv/bin/python" -c "import scvi, torch; print('scvi-tools', scvi.__version__, 'torch', torch.__version__)" ;;
  state) "$venv/bin/python" -c "import importlib.metadata as m, torch, state; print('arc-state', m.version('arc-state'), 'torch', torch.__version__)" ;;
esac
