#!/usr/bin/env bash
# Benchmark (not a test): the status page on a large fleet. Starts a release-built
# health-collector (history on, the page on metrics_listen) on loopback, fills it with AGENTS
# simulated agents x 8 devices from health-loadgen (running for the whole measurement), then
# opens the page RUNS times in headless Chromium (status-page-bench) and prints the first
# paint, the time until the fleet table is drawn, and each API call's time, with medians.
# Every process is stopped by its pid when the run ends, however it ends.
# Usage: tests/bench/status_page.sh AGENTS [RUNS]    e.g. tests/bench/status_page.sh 10000 5
set -euo pipefail
agents=${1:?usage: status_page.sh AGENTS [RUNS]}
runs=${2:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
(cd "$root" && cargo build --release --quiet -p health-collector -p health-e2e \
  --bin health-collector --bin health-loadgen --bin status-page-bench)
target="${CARGO_TARGET_DIR:-$root/target}/release"
work=$(mktemp -d)
port=${HEALTH_BENCH_PORT:-17171}
page=127.0.0.1:$((port + 1))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
cat > "$work/collector.toml" <<TOML
listen = "127.0.0.1:$port"
metrics_listen = "$page"
history_path = "$work/history.db"
[alerts]
for = { THERMAL_WARNING = "0s" }
TOML
RUST_LOG=${RUST_LOG:-warn} "$target/health-collector" --config "$work/collector.toml" 2> "$work/collector.log" &
collector_pid=$!
pids+=("$collector_pid")
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
"$target/health-loadgen" --collector "127.0.0.1:$port" --collector-pid "$collector_pid" \
  --agents "$agents" --warmup 5 --duration 600 > "$work/loadgen.log" 2>&1 &
pids+=($!)
# Wait until the collector holds the whole fleet (bounded: 3 minutes).
for _ in $(seq 360); do
  held=$(curl -s "http://$page/api/summary" 2>/dev/null | sed -n 's/.*"nodes":\([0-9]*\).*/\1/p')
  [ "${held:-0}" -ge "$agents" ] && break
  sleep 0.5
done
echo "collector holds ${held:-0} nodes; machine load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$target/status-page-bench" --page "$page" --runs "$runs" --view fleet
"$target/status-page-bench" --page "$page" --runs "$runs" --view alerts
echo "machine load after: $(cut -d' ' -f1-3 /proc/loadavg)"
