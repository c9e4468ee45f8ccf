#!/usr/bin/env bash
# Make the venv of a benchmark peer, never the project's own: scvi-tools (default) beside the
# same CPU build of torch that constraints.txt pins (any other torch pulls CUDA wheels).
#   bash benchmarks/make_peer_venv.sh [scvi] [VENV_DIR]
set -euo pipefail
peer="${1:-scvi}"
here="$(cd "$(dirname "$0")/.." && pwd)"
case "$peer" in
  scvi) venv="${2:-/tmp/venv-scvi}"; packages=("scvi-tools>=1.4,<1.5") ;;
  *) echo "unknown peer '$peer' (known: scvi)" >&2; exit 2 ;;
esac
python="$(command -v python3.11 || command -v python3)"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" torch
"$venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" "${packages[@]}"
"$venv/bin/python" -c "import scvi, torch; print('scvi-tools', scvi.__version__, 'torch', torch.__version__)"
