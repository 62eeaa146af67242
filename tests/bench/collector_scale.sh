#!/usr/bin/env bash
# Benchmark (not a test): the collector at scale. Starts a release-built health-collector on a
# loopback port and runs health-loadgen against it (AGENTS simulated agents x 8 devices at 1 Hz,
# one HTTP/2 connection each); prints the loadgen's table (or JSON with --json). The collector is
# stopped by its pid when the run ends, however it ends.
# Usage: tests/bench/collector_scale.sh AGENTS [health-loadgen options...]
#   e.g. tests/bench/collector_scale.sh 10000 --duration 30
# HEALTH_BENCH_NICE=-10 runs both processes at that nice level (root only), so that other work
# on a shared machine (builds) does not take their CPU; the result says how busy the machine was.
set -euo pipefail
agents=${1:?usage: collector_scale.sh AGENTS [health-loadgen options...]}
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
(cd "$root" && cargo build --release --quiet -p health-collector -p health-e2e \
  --bin health-collector --bin health-loadgen)
target="${CARGO_TARGET_DIR:-$root/target}/release"
work=$(mktemp -d)
port=${HEALTH_BENCH_PORT:-17171}
collector_pid=
cleanup() {
  if [ -n "$collector_pid" ]; then kill "$collector_pid" 2>/dev/null || true; wait "$collector_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# A 10k-agent fleet needs a socket per agent; the hard limit is the ceiling.
ulimit -n "$(ulimit -Hn)"
cat > "$work/collector.toml" <<TOML
listen = "127.0.0.1:$port"
# The latency measured is send -> alert: fire THERMAL_WARNING at once, not after its default 1 min.
[alerts]
for = { THERMAL_WARNING = "0s" }
TOML
nice=(nice -n "${HEALTH_BENCH_NICE:-0}")
RUST_LOG=${RUST_LOG:-warn} "${nice[@]}" "$target/health-collector" --config "$work/collector.toml" 2> "$work/collector.log" &
collector_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
status=0
"${nice[@]}" "$target/health-loadgen" --collector "127.0.0.1:$port" --collector-pid "$collector_pid" \
  --agents "$agents" "$@" || status=$?
if grep -q . "$work/collector.log"; then
  echo "--- collector log (warnings and errors, first 20 lines) ---" >&2
  head -n 20 "$work/collector.log" >&2
fi
exit "$status"
