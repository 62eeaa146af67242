#!/usr/bin/env bash
# Remediation: MTTD and MTTR of the embedded default's ladders on simulated devices at the
# default 1 s poll. Each fault is injected N times (hang, overheat, drift, failing-reset with a
# hang, a stuck ngspice); per fault it prints MTTD (fault to condition) and MTTR (fault to the
# ladder's verified end, or to quarantine for failing-reset) p50/p95 and the steps used.
#
#   bash agent/bench/remediation.sh [N=20]
#
# The embedded default's ladders, with three bench settings: max_attempts is raised (the bench
# repeats one fault 20 times on one device, which the 3-per-15-minutes envelope would stop
# after three), and so is [safety] max_resets_per_hour, for the same reason; healthy_delay is
# 1 s, so that each injection starts a fresh ladder instead of continuing the last one (the
# bench waits longer than that between injections). A benchmark, not a
# test: it prints figures and asserts nothing. It starts one agent (and the fake ngspice runs)
# and stops exactly those, by pid.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20}

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p health-agent -p agent-ctl --bins
bin="$CARGO_TARGET_DIR/release"

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

ln -s "$(command -v sleep)" "$work/ngspice"
{
  "$bin/health-agent" print-simulate-config |
    sed -e 's/^max_attempts = .*/max_attempts = 1000/' -e 's/^healthy_delay = .*/healthy_delay = "1s"/'
  printf '\n[safety]\nmax_resets_per_hour = 10000\n'
  printf '\n[[process]]\nname = "ngspice"\ncomm = "ngspice"\nmax_runtime = "2s"\n'
} > "$work/agent.toml"
# [safety] and [[process]] must come before the [[policy]] tables in TOML terms only as
# tables; appending them is valid TOML since each starts its own table.
"$bin/health-agent" check-config "$work/agent.toml" > /dev/null
"$bin/health-agent" --config "$work/agent.toml" --node bench-remediation \
  --socket "$work/agent.sock" --audit-log "$work/audit.jsonl" 2> "$work/agent.log" &
pid=$!
for _ in $(seq 100); do [ -S "$work/agent.sock" ] && break; sleep 0.1; done
echo "health-agent pid $pid, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), N=$n"
python3 agent/bench/remediation.py "$bin" "$work/agent.sock" "$work/audit.jsonl" "$work/ngspice" "$n"
