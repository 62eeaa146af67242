#!/usr/bin/env bash
# The embedded default, end to end: a collector on loopback, an agent with one simulated device
# of each kind (Loihi 2, SpiNNaker, photonic, analog crossbar) streaming to it, and a live view
# of the node's health. Ctrl-C stops all three. No hardware needed; the collector keeps its
# history (as the packaged collector.toml does) in a throwaway directory, for agent-ctl history.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
port="${COLLECTOR_PORT:-7070}"

echo "building (release)..." >&2
cargo build --release --bins --quiet
bin="$target/release"
run="$(mktemp -d)"
sock="$run/agent.sock"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT

printf 'history_path = "%s"\n' "$run/history.db" >"$run/collector.toml"
"$bin/health-collector" --config "$run/collector.toml" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:9465 2>"$run/collector.log" &
pids+=($!)
"$bin/health-agent" --simulate --node demo-node --socket "$sock" --collector "http://127.0.0.1:$port" --metrics-listen 127.0.0.1:9464 2>"$run/agent.log" &
pids+=($!)

for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
if [ ! -S "$sock" ]; then
  echo "the agent did not start:" >&2; cat "$run/agent.log" "$run/collector.log" >&2; exit 1
fi
sleep 1.5
echo "collector 127.0.0.1:$port sees:"
"$bin/agent-ctl" --collector "127.0.0.1:$port" nodes
cat <<HINT

Open http://127.0.0.1:9465/ for the collector's status page. Try, in another terminal:
  $bin/agent-ctl --endpoint unix://$sock inject-fault loihi-0 overheat
  $bin/agent-ctl --endpoint unix://$sock reset-device spinnaker-0 --soft
  $bin/agent-ctl --collector 127.0.0.1:$port alerts
  $bin/agent-ctl --collector 127.0.0.1:$port history --since 10m --oldest-first
  $bin/agent-ctl --endpoint unix://$sock maintenance start --device loihi-0 --for 10m --reason demo
  $bin/agent-ctl --collector 127.0.0.1:$port incidents
  $bin/agent-ctl --collector 127.0.0.1:$port incident ID --export markdown
  curl -s 127.0.0.1:9464/metrics | grep temperature     # the agent's Prometheus metrics
  curl -s 127.0.0.1:9465/metrics | grep condition_active # the collector's (every node)
Live view starts in 3 s; Ctrl-C stops everything.
HINT
sleep 3
"$bin/agent-ctl" --endpoint "unix://$sock" watch || true
