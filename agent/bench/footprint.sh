#!/usr/bin/env bash
# Agent footprint: the release health-agent with N simulated devices (all four kinds in turn)
# polled at 1 Hz, reporting at 1 Hz to a real health-collector on loopback, for SECONDS after a
# warm-up. Prints resident memory (steady median of 1 s samples of VmRSS, and peak VmHWM) and
# CPU time (utime + stime from /proc/<pid>/stat) as a percentage of one core over the window.
#
#   bash agent/bench/footprint.sh [SECONDS=60] [DEVICES=64] [POLICIES=0]
#
# POLICIES=1 adds the embedded default's remediation policies (the engine running, idle).
#
# Targets (issue 6): RSS <= 20 MB, CPU <= 1 % of one core. A benchmark, not a test: it prints
# figures and asserts nothing. It starts two processes and stops exactly those, by pid.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
devices=${2:-64}
policies=${3:-0}
warmup=5

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p health-agent -p health-collector --bins
bin="$CARGO_TARGET_DIR/release"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listen = "127.0.0.1:%s"\n' "$port" > "$work/collector.toml"
{
  printf 'node = "footprint"\nreport_interval = "1s"\ncollector = "http://127.0.0.1:%s"\n' "$port"
  kinds=(loihi2 spinnaker photonic analog_crossbar)
  for ((i = 0; i < devices; i++)); do
    printf '\n[[device]]\nid = "dev-%d"\nkind = "%s"\nbackend = "sim"\npoll_interval = "1s"\n' \
      "$i" "${kinds[i % 4]}"
  done
} > "$work/agent.toml"
if [ "$policies" = 1 ]; then
  # The embedded default's [remediation] and [[policy]] tables: the engine looks at every
  # device each 250 ms (nothing matches on healthy devices, so nothing acts).
  "$bin/health-agent" print-simulate-config | sed -n '/^\[remediation\]/,$p' >> "$work/agent.toml"
fi
"$bin/health-agent" check-config "$work/agent.toml" > /dev/null

RUST_LOG=warn "$bin/health-collector" --config "$work/collector.toml" > "$work/collector.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
RUST_LOG=warn "$bin/health-agent" --config "$work/agent.toml" --socket "$work/agent.sock" \
  > "$work/agent.log" 2>&1 &
agent=$!
pids+=("$agent")
for _ in $(seq 100); do [ -S "$work/agent.sock" ] && break; sleep 0.1; done
[ -S "$work/agent.sock" ] || { echo "the agent did not start:"; cat "$work/agent.log"; exit 1; }
sleep "$warmup"

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$agent/stat"; }
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$agent/status"; }

t0=$(date +%s.%N)
c0=$(cpu_ticks)
rss=()
for ((s = 0; s < secs; s++)); do
  sleep 1
  rss+=("$(status_kb VmRSS)")
done
t1=$(date +%s.%N)
c1=$(cpu_ticks)
hwm=$(status_kb VmHWM)
threads=$(status_kb Threads)
sent=$("$bin/agent-ctl" --endpoint "unix://$work/agent.sock" --json status |
  python3 -c 'import json,sys; a=json.load(sys.stdin)["agent"]; print(a["reports_sent_total"], a["last_acked_seq"])')

median_kb=$(printf '%s\n' "${rss[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
python3 - "$median_kb" "$hwm" "$c0" "$c1" "$t0" "$t1" "$hz" "$devices" "$secs" "$threads" "$sent" <<'PY'
import sys
median_kb, hwm_kb, c0, c1, t0, t1, hz, devices, secs, threads, sent = sys.argv[1:]
cpu = (int(c1) - int(c0)) / int(hz) / (float(t1) - float(t0)) * 100
print(f"devices {devices}, 1 Hz poll and report, {secs} s window after warm-up")
print(f"RSS steady (median VmRSS): {int(median_kb) / 1024:.1f} MiB")
print(f"RSS peak (VmHWM):          {int(hwm_kb) / 1024:.1f} MiB")
print(f"CPU:                       {cpu:.2f} % of one core ({int(c1) - int(c0)} ticks at {hz} Hz)")
print(f"threads {threads}; reports sent / last acked seq: {sent.replace(' ', ' / ')}")
PY
