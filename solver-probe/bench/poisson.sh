#!/usr/bin/env bash
# Benchmark (not a test): the 2D Poisson matrix on an N x N grid (default N = 1000: 1M
# unknowns, 5M nonzeros), timed in SciPy and in solver-probe in alternation: after one warm-up
# run of each, PAIRS (default 5) rounds of SciPy, the probe, and the probe on one worker
# (SOLVER_PROBE_WORKERS=1), each a process of its own; the ratios are taken pair by pair and
# their median and min-max printed, so one slow moment of a shared machine shows as one odd
# pair rather than as the result. Prints the machine's load before and after.
# Usage: solver-probe/bench/poisson.sh [N]   (SciPy comes from a venv this script makes)
#   PAIRS=7 solver-probe/bench/poisson.sh 1000;  NO_COND=1 skips the condition estimates
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
pairs=${PAIRS:-5}
cond=(--cond)
[ -n "${NO_COND:-}" ] && cond=()
probe() { "$target/release/solver-probe" bench "${cond[@]}" "$work/poisson.npz"; }
echo "machine load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$venv/bin/python" "$here/poisson.py" time "$work/poisson.npz" "${cond[@]}" > /dev/null
probe > /dev/null
for i in $(seq "$pairs"); do
  echo "pair $i of $pairs" >&2
  "$venv/bin/python" "$here/poisson.py" time "$work/poisson.npz" "${cond[@]}" > "$work/scipy-$i.json"
  probe > "$work/probe-$i.json"
  SOLVER_PROBE_WORKERS=1 probe > "$work/probe1-$i.json"
done
"$venv/bin/python" "$here/poisson.py" pairs "$work" "$pairs"
echo "machine load after: $(cut -d' ' -f1-3 /proc/loadavg)"
