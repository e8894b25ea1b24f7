#!/usr/bin/env bash
# How long a lone record takes from its hook to `memtrack record`'s output
# file (issue 14: the consumer's batching policy holds records until a whole
# batch is published or the oldest has waited its latency bound; this is the
# bound's worst case, an otherwise idle workload). benches/latency/latency.c
# writes one record every GAP_MS and times until the recorder's file grows.
# With --paced RATE, benches/latency/paced.c instead measures the hook's
# cost at a steady RATE records per millisecond for 3 s: the rates where
# partial batches are taken at the bound, reading slots near the writer.
#
# usage: scripts/bench-latency.sh [--events N] [--gap-ms G] [--paced RATE]
#        [--memtrack PATH]
#        (after `cargo build --release`; --memtrack: another build's reader,
#        to compare side by side; on a busy machine run it under `chrt -r 1`)
set -euo pipefail
cd "$(dirname "$0")/.."
events=200 gap_ms=20 paced= memtrack=$PWD/target/release/memtrack
while [ $# -gt 0 ]; do
    case $1 in
    --events) events=$2 ;;
    --gap-ms) gap_ms=$2 ;;
    --paced) paced=$2 ;;
    --memtrack) memtrack=$2 ;;
    *) echo "bench-latency: unknown flag $1" >&2; exit 2 ;;
    esac
    shift 2
done
release=target/release
[ -f "$release/libmemtrack.so" ] && [ -x "$memtrack" ] || {
    echo "bench-latency: run 'cargo build --release' first" >&2
    exit 1
}
work=$(mktemp -d) recorder= name="latency-$$-$RANDOM"
cleanup() {
    [ -n "$recorder" ] && kill "$recorder" 2>/dev/null || true
    rm -rf "$work"
    rm -f "/dev/shm/memtrack-$name"
}
trap cleanup EXIT
for program in latency paced; do
    cc -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude "benches/latency/$program.c" \
        -L"$release" -lmemtrack -Wl,-rpath,"$PWD/$release" -o "$work/$program"
done
mkdir "$work/out"
"$memtrack" record -q --ring "$name" -o "$work/out/run.mtr" &
recorder=$!
for _ in $(seq 100); do
    [ "$("$memtrack" status --ring "$name" --json 2>/dev/null | jq .reader_pid)" = "$recorder" ] && break
    sleep 0.05
done
if [ -n "$paced" ]; then
    MEMTRACK_RING=$name "$work/paced" "$paced" 3
else
    MEMTRACK_RING=$name "$work/latency" "$work/out" "$events" "$gap_ms"
fi
kill -INT "$recorder"
wait "$recorder" || true
recorder=
