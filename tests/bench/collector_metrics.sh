#!/usr/bin/env bash
# Benchmark (not a test): the collector's /metrics at scale, as deployed (history on). Starts a
# release-built health-collector with metrics_listen and history_path, fills it with
# health-loadgen (AGENTS x 8 devices at 1 Hz, running in the background for the whole
# measurement), then scrapes: the default page (fleet aggregates) ROUNDS times, and every shard
# of=SHARDS ROUNDS times, printing size and time of each (curl), the medians, the collector's
# RSS (now and peak, VmHWM) before and after the scrapes, and the load average. The collector
# and the load generator are stopped by their pids when the run ends, however it ends.
# Usage: tests/bench/collector_metrics.sh AGENTS [SHARDS] [ROUNDS]
#   e.g. tests/bench/collector_metrics.sh 10000 8 3
set -euo pipefail
agents=${1:?usage: collector_metrics.sh AGENTS [SHARDS] [ROUNDS]}
shards=${2:-8}
rounds=${3:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
(cd "$root" && cargo build --release --quiet -p health-collector -p health-e2e \
  --bin health-collector --bin health-loadgen)
target="${CARGO_TARGET_DIR:-$root/target}/release"
work=$(mktemp -d)
port=${HEALTH_BENCH_PORT:-17171}
mport=${HEALTH_BENCH_METRICS_PORT:-17172}
collector_pid=
loadgen_pid=
cleanup() {
  for pid in $loadgen_pid $collector_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
cat > "$work/collector.toml" <<TOML
listen = "127.0.0.1:$port"
metrics_listen = "127.0.0.1:$mport"
history_path = "$work/history.db"
[alerts]
for = { THERMAL_WARNING = "0s" }
TOML
RUST_LOG=${RUST_LOG:-warn} "$target/health-collector" --config "$work/collector.toml" 2> "$work/collector.log" &
collector_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
# Long enough for the whole measurement; stopped when it is done.
"$target/health-loadgen" --collector "127.0.0.1:$port" --collector-pid "$collector_pid" \
  --agents "$agents" --duration 3600 --json > "$work/loadgen.json" 2> "$work/loadgen.log" &
loadgen_pid=$!
rss() { awk '/^VmRSS|^VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$collector_pid/status"; }
nodes() { curl -s "127.0.0.1:$mport/metrics" | awk '$1 == "health_collector_nodes" {print $2}'; }
echo "waiting for $agents nodes..."
for _ in $(seq 600); do
  [ "$(nodes)" = "$agents" ] && break
  sleep 1
done
echo "nodes held: $(nodes); settling 20 s"
sleep 20
echo "before scrapes: $(rss) load: $(cut -d' ' -f1-3 /proc/loadavg)"
scrape() { # label url
  local out
  out=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$2")
  echo "$1 $out"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
results="$work/results"
for r in $(seq "$rounds"); do
  scrape default "127.0.0.1:$mport/metrics" | tee -a "$results"
  for s in $(seq 0 $((shards - 1))); do
    scrape "shard$s" "127.0.0.1:$mport/metrics?shard=$s&of=$shards" | tee -a "$results"
  done
  echo "round $r: $(rss) load: $(cut -d' ' -f1-3 /proc/loadavg)"
done
echo "--- medians over $rounds rounds (bytes, seconds) ---"
for label in default $(seq -f 'shard%g' 0 $((shards - 1))); do
  size=$(awk -v l="$label" '$1 == l {print $3}' "$results" | median)
  time=$(awk -v l="$label" '$1 == l {print $4}' "$results" | median)
  echo "$label $size $time"
done
echo "after scrapes: $(rss) load: $(cut -d' ' -f1-3 /proc/loadavg)"
if grep -q . "$work/collector.log"; then
  echo "--- collector log (first 20 lines) ---" >&2
  head -n 20 "$work/collector.log" >&2
fi
