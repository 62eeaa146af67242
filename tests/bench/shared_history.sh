#!/usr/bin/env bash
# Benchmark (not a test): the fleet history as deployed, on SQLite and on a shared PostgreSQL,
# in one run. Each phase starts two release-built collectors with history on and their
# /metrics scraped every SCRAPE seconds (the default scrape: fleet aggregates), and two
# health-loadgen runs of AGENTS/2 agents each (8 devices, 1 Hz), one per collector:
#   sqlite   each collector its own SQLite file (history_path)
#   postgres both collectors in one PostgreSQL database (history_url), a throwaway cluster
#            made here with initdb (as the `postgres` user when run as root), SCRAM password
#            from a 0600 file as the collector reads it in production.
# Then, per collector: events written per second, write lag p99 (from the collector's
# health_collector_history_write_lag_seconds histogram: the bucket bound that holds the 99th
# percentile), records dropped, scrape size and time (median of the scrapes taken during the
# run, and one full scrape in SHARDS shards), collector CPU and peak RSS (from the loadgen),
# p99 send -> alert, and the machine's load. Every process started here is stopped by pid.
# Usage: tests/bench/shared_history.sh [AGENTS] [DURATION]   (default 10000 60)
set -euo pipefail
agents=${1:-10000}
duration=${2:-60}
scrape_every=${SCRAPE:-15}
shards=${SHARDS:-4}
half=$((agents / 2))
root=$(cd "$(dirname "$0")/../.." && pwd)
(cd "$root" && cargo build --release --quiet -p health-collector -p health-e2e \
  --bin health-collector --bin health-loadgen)
target="${CARGO_TARGET_DIR:-$root/target}/release"
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "shared_history.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
work=$(mktemp -d /tmp/shared-history.XXXXXX)
chmod 755 "$work"
pids=()
pg_pid=
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$pg_pid" ]; then kill -INT "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  pg_user=$(getent passwd postgres >/dev/null && echo postgres || echo nobody)
  as_pg=(setpriv --reuid="$pg_user" --regid="$(id -g "$pg_user")" --clear-groups)
fi
start_postgres() {
  mkdir -p "$work/pg" "$work/sock"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/pg-password"
  chmod 600 "$work/pg-password"
  cp "$work/pg-password" "$work/pg/pwfile"
  [ ${#as_pg[@]} -eq 0 ] || chown -R "$pg_user" "$work/pg" "$work/sock"
  "${as_pg[@]}" "$bindir/initdb" -D "$work/pg/data" -U health --auth=scram-sha-256 \
    --pwfile="$work/pg/pwfile" -E UTF8 --locale=C --no-sync > "$work/initdb.log" 2>&1
  pg_port=$((17400 + RANDOM % 500))
  "${as_pg[@]}" "$bindir/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/sock" \
    -c listen_addresses=127.0.0.1 -c max_connections=50 > "$work/postgres.log" 2>&1 &
  pg_pid=$!
  for _ in $(seq 100); do
    PGPASSWORD=$(cat "$work/pg-password") "$bindir/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U health \
      -d postgres -c 'CREATE DATABASE history' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "shared_history.sh: PostgreSQL did not start; its log:" >&2; cat "$work/postgres.log" >&2; exit 1
}

# scrape NAME PORT: every scrape_every seconds, one default scrape of the collector's
# /metrics: "bytes seconds" per line in $work/NAME.scrapes.
scrape() {
  while true; do
    curl -s -o /dev/null -w '%{size_download} %{time_total}\n' "http://127.0.0.1:$2/metrics" \
      >> "$work/$1.scrapes" || true
    sleep "$scrape_every"
  done
}

metric() { # metric PORT NAME: the value of an unlabelled series
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

lag_p99() { # the upper bound of the bucket that holds the 99th percentile
  curl -s "http://127.0.0.1:$1/metrics" | awk '
    /^health_collector_history_write_lag_seconds_bucket/ {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); n++; bound[n] = le; count[n] = $2 }
    /^health_collector_history_write_lag_seconds_count/ { total = $2 }
    END { if (total == 0) { print "-"; exit } for (i = 1; i <= n; i++) if (count[i] >= 0.99 * total) { print bound[i] "s"; exit } }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print v[int((NR + 1) / 2)] }'; }

phase() { # phase sqlite|postgres
  local kind=$1 i port mport history
  for i in 0 1; do
    port=$((17600 + i)); mport=$((17610 + i))
    if [ "$kind" = sqlite ]; then
      history="history_path = \"$work/$kind-$i.db\""
    else
      history="history_url = \"postgres://health@127.0.0.1:$pg_port/history?sslmode=disable\"
history_password_file = \"$work/pg-password\""
    fi
    cat > "$work/$kind-$i.toml" <<TOML
listen = "127.0.0.1:$port"
metrics_listen = "127.0.0.1:$mport"
collector_name = "c$i"
$history
[alerts]
for = { THERMAL_WARNING = "0s" }
TOML
    RUST_LOG=${RUST_LOG:-warn} "$target/health-collector" --config "$work/$kind-$i.toml" \
      2> "$work/$kind-$i.log" &
    pids+=($!); eval "collector_$i=$!"
  done
  for i in 0 1; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$((17600 + i))") 2>/dev/null && break; sleep 0.1; done
    : > "$work/$kind-$i.scrapes"
    scrape "$kind-$i" $((17610 + i)) &
    pids+=($!); eval "scraper_$i=$!"
  done
  local written0=() t0
  for i in 0 1; do written0[i]=$(metric $((17610 + i)) health_collector_history_written_total); done
  t0=$(date +%s.%N)
  for i in 0 1; do
    "$target/health-loadgen" --collector "127.0.0.1:$((17600 + i))" --collector-pid "$(eval echo \$collector_$i)" \
      --agents "$half" --duration "$duration" --node-prefix "$kind$i-" --json > "$work/$kind-$i.json" \
      2> "$work/$kind-$i.loadgen.log" &
    eval "loadgen_$i=$!"
  done
  wait "$loadgen_0" || true; wait "$loadgen_1" || true
  local t1; t1=$(date +%s.%N)
  for i in 0 1; do
    local m=$((17610 + i)) written dropped full_bytes=0 full_time=0 s out
    written=$(metric $m health_collector_history_written_total)
    dropped=$(metric $m health_collector_history_dropped_total)
    for s in $(seq 0 $((shards - 1))); do
      out=$(curl -s -o /dev/null -w '%{size_download} %{time_total}' "http://127.0.0.1:$m/metrics?shard=$s&of=$shards")
      full_bytes=$(awk -v a="$full_bytes" -v b="${out% *}" 'BEGIN { print (b > a) ? b : a }')
      full_time=$(awk -v a="$full_time" -v b="${out#* }" 'BEGIN { print (b > a) ? b : a }')
    done
    python3 - "$work/$kind-$i.json" "$kind" "$i" "$written" "${written0[i]}" "$t0" "$t1" "$dropped" \
      "$(lag_p99 $m)" "$(cut -d' ' -f1 "$work/$kind-$i.scrapes" | median)" \
      "$(cut -d' ' -f2 "$work/$kind-$i.scrapes" | median)" "$full_bytes" "$full_time" <<'PY'
import json, sys
(path, kind, i, written, written0, t0, t1, dropped, lag, sbytes, stime, fbytes, ftime) = sys.argv[1:]
r = json.load(open(path))
rate = (float(written or 0) - float(written0 or 0)) / (float(t1) - float(t0))
def mb(x): return "-" if x in ("-", "") else f"{float(x) / 1e6:.2f} MB"
print(f"{kind:8} c{i}  written {rate:7.0f}/s  lag p99 <= {lag:6}  dropped {dropped or 0:>6}  "
      f"scrape {mb(sbytes)} {stime}s  largest of the shards {mb(fbytes)} {ftime}s  "
      f"cpu {r.get('collector_cpu_percent') or 0:.0f}%  peak rss {r.get('collector_peak_rss_mib') or 0:.0f} MiB  "
      f"alert p99 {r['alert_latency'].get('p99_ms', '-')} ms  nodes {r['collector_nodes_seen']}  load {r.get('load1')}")
PY
  done
  for i in 0 1; do kill "$(eval echo \$scraper_$i)" "$(eval echo \$collector_$i)" 2>/dev/null || true; done
  for i in 0 1; do wait "$(eval echo \$collector_$i)" 2>/dev/null || true; done
  for i in 0 1; do
    if grep -qi "error" "$work/$kind-$i.log"; then echo "--- $kind collector c$i log (errors, first 10) ---" >&2; grep -i error "$work/$kind-$i.log" | head -n 10 >&2; fi
  done
}

echo "== $agents agents (two loadgens of $half, 8 devices, 1 Hz) on two collectors, $duration s, /metrics scraped every ${scrape_every}s; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
phase sqlite
start_postgres
phase postgres
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
