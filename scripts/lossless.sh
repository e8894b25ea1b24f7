#!/usr/bin/env bash
# The lossless check of docs/PERFORMANCE.md: ffi_tests/flatout.c (N threads
# calling memtrack_alloc/memtrack_free flat out, no leaks) run R times for
# each thread count, under `memtrack record -- flatout` and, with
# MEMTRACK_RING set, while `memtrack record --ring NAME` runs. Prints one
# line per run and a summary per (mode, threads): records dropped in total,
# runs with any drop, remaining buffers reported (0 expected: the workload
# frees all it allocates), and the longest hook call seen.
#
# Exit status 4 if any record was dropped or lost; 3 if a remaining buffer
# was reported as fact (not marked uncertain): the workload leaks nothing,
# so a drop may only ever show up as an *uncertain* leftover; anything else
# (1, 2) is the script or a program it runs failing.
#
# usage: scripts/lossless.sh [--runs R] [--records N] [--threads "2 8 16"]
#        (after `cargo build --release`; needs jq).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20 records=4000000 thread_counts="2 8 16"
while [ $# -gt 0 ]; do
    case $1 in
    --runs) runs=$2 ;;
    --records) records=$2 ;;
    --threads) thread_counts=$2 ;;
    *) echo "lossless: unknown flag $1" >&2; exit 2 ;;
    esac
    shift 2
done
release=target/release
[ -f "$release/libmemtrack.so" ] && [ -x "$release/memtrack" ] || {
    echo "lossless: run 'cargo build --release' first" >&2
    exit 1
}
memtrack=$PWD/$release/memtrack
work=$(mktemp -d)
recorder=
cleanup() {
    [ -n "$recorder" ] && kill "$recorder" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cc -std=c11 -O2 -Wall -Wextra -Werror -pedantic -pthread -Iinclude ffi_tests/flatout.c \
    -L"$release" -lmemtrack -Wl,-rpath,"$PWD/$release" -o "$work/flatout"

# One run; prints "dropped lost remaining certain max_hook_ns seconds"
# (certain: remaining buffers not marked uncertain).
run_command() {
    local threads=$1 out
    rm -f "$work/run.mtr"
    out=$("$memtrack" record -q -o "$work/run.mtr" -- "$work/flatout" --threads "$threads" --records "$records")
    summarize "$out"
}

run_ring() {
    local threads=$1 name="lossless-$$-$RANDOM" out
    rm -f "$work/run.mtr"
    "$memtrack" record -q --ring "$name" -o "$work/run.mtr" &
    recorder=$!
    # The reader is attached once it has created the ring and taken its lock.
    for _ in $(seq 100); do
        [ "$("$memtrack" status --ring "$name" --json 2>/dev/null | jq .reader_pid)" = "$recorder" ] && break
        sleep 0.05
    done
    [ "$("$memtrack" status --ring "$name" --json | jq .reader_pid)" = "$recorder" ] || {
        echo "lossless: memtrack record --ring $name never attached" >&2
        exit 2
    }
    out=$(MEMTRACK_RING=$name "$work/flatout" --threads "$threads" --records "$records")
    sleep 0.2 # the reader drains the last records, then Ctrl-C
    kill -INT "$recorder"
    wait "$recorder"
    recorder=
    rm -f "/dev/shm/memtrack-$name"
    summarize "$out"
}

summarize() {
    local report
    report=$("$memtrack" report "$work/run.mtr" --json)
    echo "$(jq .lost_detail.dropped <<<"$report") $(jq '.lost - .lost_detail.dropped' <<<"$report")" \
        "$(jq '[.remaining[]?] | length' <<<"$report")" "$(jq '[.remaining[]? | select(.uncertain | not)] | length' <<<"$report")" \
        "$(jq .max_hook_ns <<<"$1") $(jq .seconds <<<"$1")"
}

echo "lossless: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores;" \
    "$records records per run; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
failed=0
for mode in command ring; do
    for threads in $thread_counts; do
        total=0 bad=0 worst=0 leftover=0 certain=0
        for run in $(seq "$runs"); do
            # In this shell, not a subshell: a failing program ends the script
            # (set -e), and `recorder` stays known to `cleanup`.
            "run_$mode" "$threads" >"$work/line"
            read -r dropped lost remaining as_fact hook seconds <"$work/line"
            echo "  $mode threads=$threads run=$run dropped=$dropped lost=$lost remaining=$remaining" \
                "remaining_as_fact=$as_fact" \
                "max_hook_ms=$(awk -v n="$hook" 'BEGIN { printf "%.3f", n / 1e6 }') seconds=$seconds"
            total=$((total + dropped + lost))
            [ $((dropped + lost)) -gt 0 ] && bad=$((bad + 1))
            leftover=$((leftover + remaining))
            certain=$((certain + as_fact))
            [ "$hook" -gt "$worst" ] && worst=$hook
        done
        printf '%-8s threads=%-3s runs=%s dropped+lost=%s runs_with_loss=%s remaining=%s (as fact: %s) worst_hook_ms=%.3f\n' \
            "$mode" "$threads" "$runs" "$total" "$bad" "$leftover" "$certain" \
            "$(awk -v n="$worst" 'BEGIN { print n / 1e6 }')"
        [ "$total" -eq 0 ] || [ "$failed" -eq 3 ] || failed=4
        [ "$certain" -eq 0 ] || failed=3
    done
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $failed
