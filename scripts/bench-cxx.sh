#!/usr/bin/env bash
# The hook cost from C++ through the C ABI, as a tt_metal process sees it:
# ffi_tests/bench.cpp built with -O2 against target/release/libmemtrack.so,
# run twice in one go -- tracking off, then under `memtrack record` (a
# reader in another process writing the record file) -- each time next to
# an empty function exported from another shared library.
#
# usage: scripts/bench-cxx.sh [--threads N] [--events N] [--rounds R]
#        (after `cargo build --release`; needs jq)
set -euo pipefail
cd "$(dirname "$0")/.."
release=target/release
[ -f "$release/libmemtrack.so" ] && [ -x "$release/memtrack" ] || {
    echo "bench-cxx: run 'cargo build --release' first" >&2
    exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -fPIC -shared -o "$work/libbench_empty.so" ffi_tests/bench_empty.c
c++ -std=c++17 -O2 -Wall -Wextra -Werror -pedantic -pthread -Iinclude ffi_tests/bench.cpp \
    -L"$work" -lbench_empty -L"$release" -lmemtrack -Wl,-rpath,"$work:$PWD/$release" -o "$work/bench"

off=$(env -u MEMTRACK_RING "$work/bench" "$@")
on=$("$release/memtrack" record -q -o "$work/bench.mtr" -- "$work/bench" "$@")
lost=$("$release/memtrack" report "$work/bench.mtr" --json | jq .lost)

field() { jq -r ".$2" <<<"$1"; }
[ "$(field "$off" enabled)" = false ] && [ "$(field "$on" enabled)" = true ] || {
    echo "bench-cxx: tracking state is not what the run expects" >&2
    exit 1
}
echo "C++ through the C ABI: $(field "$off" threads) thread(s), $(field "$off" events) events per thread per round," \
    "median of $(field "$off" rounds) rounds (ns per event per thread)"
printf '%-34s%12s%12s%12s\n' "" "empty call" "memtrack" "difference"
for row in "tracking off:$off" "tracking on, memtrack record:$on"; do
    name=${row%%:\{*}
    json=${row#*:}
    empty=$(field "$json" empty_call_ns)
    hook=$(field "$json" hook_ns)
    awk -v n="$name" -v e="$empty" -v h="$hook" 'BEGIN { printf "%-34s%12.2f%12.2f%12.2f\n", n, e, h, h - e }'
done
echo "records lost with the reader attached: $lost"
