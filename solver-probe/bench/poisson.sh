#!/usr/bin/env bash
# Benchmark (not a test): the 2D Poisson matrix on an N x N grid (default N = 1000: 1M
# unknowns, 5M nonzeros), timed in SciPy and in solver-probe in the same run, with ratios.
# Usage: solver-probe/bench/poisson.sh [N]   (SciPy comes from a venv this script makes)
set -euo pipefail
n=${1:-1000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${HEALTH_SCIPY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/health-agent/venv-scipy}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import numpy, scipy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check numpy scipy
fi
(cd "$root" && cargo build --release --quiet -p solver-probe)
target="${CARGO_TARGET_DIR:-$root/target}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" "$here/poisson.py" build "$n" "$work/poisson.npz"
"$venv/bin/python" "$here/poisson.py" time "$work/poisson.npz" > "$work/scipy.json"
"$target/release/solver-probe" bench --cond "$work/poisson.npz" > "$work/probe.json"
"$venv/bin/python" "$here/poisson.py" compare "$work/scipy.json" "$work/probe.json"
