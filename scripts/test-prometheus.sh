#!/usr/bin/env bash
# Tests `memtrack serve` against a real Prometheus server (Debian's package),
# all on loopback:
#
#  1. C clients (ffi_tests/cmake/client.c, linked with target/release/
#     libmemtrack.so) record a known workload into a 16-slot ring without
#     sub-rings (MEMTRACK_SUBRINGS=0: every record in the shared ring) that
#     nothing consumes: 2 processes x 9 records while they hold (2 dropped),
#     then their exit records (4 dropped in all);
#  2. `memtrack serve --listen 127.0.0.1:0` serves the ring; Prometheus
#     scrapes it every second;
#  3. Prometheus's HTTP API (/api/v1/query, /api/v1/metadata) must return
#     the exact values, types and units; then a third client runs and the
#     new values must reach Prometheus too.
#
# Installs the `prometheus` package with apt-get if it is missing (as root).
# Takes about 15 s. Usage: scripts/test-prometheus.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

passed=0
pass() {
    passed=$((passed + 1))
    echo "ok: $*"
}
fail() {
    echo "FAILED: $*" >&2
    if [ -s "${tmp:-/nonexistent}/prometheus.log" ]; then
        echo "--- last lines of prometheus.log" >&2
        tail -20 "$tmp/prometheus.log" >&2
    fi
    if [ -s "${tmp:-/nonexistent}/serve.err" ]; then
        echo "--- memtrack serve stderr" >&2
        cat "$tmp/serve.err" >&2
    fi
    echo "test-prometheus: $passed passed, 1 failed" >&2
    exit 1
}

if ! command -v prometheus >/dev/null; then
    [ "$(id -u)" = 0 ] || fail "prometheus is not installed (apt-get install -y prometheus)"
    echo "== apt-get install prometheus"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
for tool in prometheus curl jq cc python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
prometheus --version 2>&1 | head -1

echo "== cargo build --release"
cargo build --release --workspace --quiet
target_dir=${CARGO_TARGET_DIR:-$root/target}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrack-test-prometheus.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

unset MEMTRACK_RING
ring="$tmp/ring"
cc -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude ffi_tests/cmake/client.c -o "$tmp/client" \
    -L"$target_dir/release" -lmemtrack -Wl,-rpath,"$target_dir/release"
# Each client writes 10 records (start, capacity, mark, 3 allocs, 1 free,
# 2 allocs, exit); the ring holds 16 and has no consumer. Clients 1 and 2
# hold (before their exit record) until $tmp/hold is closed.
mkfifo "$tmp/hold"
MEMTRACK_CAPACITY=16 MEMTRACK_SUBRINGS=0 "$tmp/client" "$ring" 1 hold <"$tmp/hold" >"$tmp/client1.out" &
pids+=($!)
exec 3>"$tmp/hold"
for _ in $(seq 100); do [ -e "$ring" ] && break; sleep 0.05; done
"$tmp/client" "$ring" 2 hold <"$tmp/hold" >"$tmp/client2.out" 3>&- &
pids+=($!)
# Until both have made their allocations (each ends with its L1 buffer).
for _ in $(seq 200); do
    "$target_dir/release/memtrack" status --ring "$ring" --json 2>/dev/null \
        | jq -e '[.usage[] | select(.kind == "L1")] | length == 2' >/dev/null && break
    sleep 0.05
done

"$target_dir/release/memtrack" serve --ring "$ring" --listen 127.0.0.1:0 >"$tmp/serve.out" 2>"$tmp/serve.err" 3>&- &
pids+=($!)
for _ in $(seq 100); do
    [ -s "$tmp/serve.out" ] && break
    sleep 0.1
done
target=$(sed -n 's|.*http://\(.*\)/metrics$|\1|p' "$tmp/serve.out")
[ -n "$target" ] || fail "memtrack serve printed no address"
pass "memtrack serve listens on $target"

# A free loopback port for Prometheus (the kernel's choice, released just before use).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: memtrack
    static_configs:
      - targets: ["$target"]
EOF
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$port" >"$tmp/prometheus.log" 2>&1 3>&- &
pids+=($!)
api="http://127.0.0.1:$port/api/v1"

# query PROMQL: prints the value of the query's one series ("" if none).
query() {
    curl -fsS -G "$api/query" --data-urlencode "query=$1" \
        | jq -r 'if .status != "success" then error("query failed") else .data.result end
                 | if length == 1 then .[0].value[1] elif length == 0 then "" else "several series" end'
}

# wait_for PROMQL VALUE: until Prometheus returns VALUE (at most 30 s).
wait_for() {
    local got=""
    for _ in $(seq 60); do
        got=$(query "$1" 2>/dev/null || true)
        [ "$got" = "$2" ] && return 0
        sleep 0.5
    done
    fail "$1 = '${got}', expected '$2'"
}

wait_for 'up{job="memtrack"}' 1
pass "Prometheus on 127.0.0.1:$port scrapes memtrack serve"

expect() {
    wait_for "$1" "$2"
    pass "$1 = $2"
}
expect 'memtrack_device_memory_used_bytes{device="1",kind="DRAM"}' 8192
expect 'memtrack_device_memory_used_bytes{device="1",kind="L1"}' 1000
expect 'memtrack_device_memory_used_bytes{device="2",kind="DRAM"}' 8192
expect 'memtrack_device_memory_buffers{device="2",kind="DRAM"}' 3
expect 'memtrack_device_memory_capacity_bytes{device="1",kind="DRAM"}' 1073741824
expect 'sum(memtrack_device_memory_used_bytes)' 18384
expect 'count(memtrack_device_memory_used_bytes)' 4
expect 'memtrack_records_lost_total{reason="dropped"}' 2
expect 'memtrack_records_lost_total{reason="writer_died"}' 0
expect 'memtrack_records_delivered_total' 0
expect 'memtrack_processes{state="exited"}' 0
expect 'memtrack_processes{state="running"}' 2
expect 'absent({__name__=~"memtrack_process_.*"})' 1  # no --per-process
# The fill-level query of docs/PROMETHEUS.md (8 KiB of 1 GiB, scaled back).
expect '(memtrack_device_memory_used_bytes{device="1",kind="DRAM"} / on(instance, device, kind) memtrack_device_memory_capacity_bytes) * 1073741824' 8192

# Types and units as Prometheus understood them (units exist only in OpenMetrics).
metadata=$(curl -fsS -G "$api/metadata" --data-urlencode "metric=memtrack_device_memory_used_bytes")
got=$(jq -c '.data.memtrack_device_memory_used_bytes[0] | {type, unit}' <<<"$metadata")
[ "$got" = '{"type":"gauge","unit":"bytes"}' ] || fail "metadata of memtrack_device_memory_used_bytes: $got"
pass "memtrack_device_memory_used_bytes is a gauge in bytes (OpenMetrics)"
metadata=$(curl -fsS -G "$api/metadata" --data-urlencode "metric=memtrack_records_lost")
got=$(jq -r '.data.memtrack_records_lost[0].type' <<<"$metadata")
[ "$got" = counter ] || fail "metadata of memtrack_records_lost: '$got'"
pass "memtrack_records_lost is a counter"

# Every query of the Grafana dashboard (docs/grafana/memtrack.json), with
# its variables filled in as Grafana would, is valid PromQL for this
# Prometheus; those over series a plain `serve` exports return data (the
# ones that need --consume or --per-process may be empty here).
dashboard="$(dirname "$0")/../docs/grafana/memtrack.json"
mapfile -t exprs < <(jq -r '.panels[] | .targets[]? | .expr' "$dashboard")
[ "${#exprs[@]}" -ge 15 ] || fail "only ${#exprs[@]} queries in $dashboard"
for expr in "${exprs[@]}"; do
    promql=$(sed -e 's/\$instance/.*/g; s/\$device/.*/g; s/\$__rate_interval/1m/g; s/\$__range/5m/g' <<<"$expr")
    found=""
    for _ in $(seq 20); do
        found=$(curl -fsS -G "$api/query" --data-urlencode "query=$promql" \
            | jq -r 'if .status != "success" then "error" else (.data.result | length) end') || found="error"
        [ -n "$found" ] || found="error"
        [ "$found" = error ] && break
        [ "$found" != 0 ] && break
        sleep 0.5
    done
    [ "$found" = error ] && fail "dashboard query rejected by Prometheus: $promql"
    if [ "$found" = 0 ] && ! grep -qE 'memtrack_(allocations|frees|anomalies|device_memory_peak|process_)' <<<"$promql"; then
        fail "dashboard query returned nothing: $promql"
    fi
done
pass "the ${#exprs[@]} queries of docs/grafana/memtrack.json run in Prometheus"

# Clients that end hold no device memory: their usage leaves the device
# series (which stay, at 0); their exit records are dropped.
exec 3>&-
wait "${pids[0]}" || fail "client 1 failed: $(cat "$tmp/client1.out")"
wait "${pids[1]}" || fail "client 2 failed: $(cat "$tmp/client2.out")"
expect 'memtrack_processes{state="exited"}' 2
expect 'memtrack_device_memory_used_bytes{device="1",kind="DRAM"}' 0
expect 'sum(memtrack_device_memory_used_bytes)' 0
expect 'count(memtrack_device_memory_used_bytes)' 4
expect 'memtrack_records_lost_total{reason="dropped"}' 4

# A change in the ring reaches Prometheus on a later scrape: the third
# client's records are all dropped (the ring is full), its counters are not
# (a process that ended: its device series appears, at 0).
"$tmp/client" "$ring" 3 >/dev/null
expect 'memtrack_device_memory_used_bytes{device="3",kind="DRAM"}' 0
expect 'memtrack_records_lost_total{reason="dropped"}' 14
expect 'memtrack_processes{state="exited"}' 3

echo "test-prometheus: $passed passed, 0 failed"
