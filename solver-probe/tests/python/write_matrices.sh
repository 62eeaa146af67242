#!/usr/bin/env bash
# Writes reference matrices with real NumPy/SciPy into DIR (see write_matrices.py).
# The venv lives at ${HEALTH_SCIPY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/health-agent/venv-scipy}
# and is created once; numpy and scipy are installed from PyPI only if not importable.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR="$1"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${HEALTH_SCIPY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/health-agent/venv-scipy}"
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import numpy, scipy.sparse, scipy.io' >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check numpy scipy >&2
fi
mkdir -p "$DIR"
exec "$VENV/bin/python" "$HERE/write_matrices.py" "$DIR"
