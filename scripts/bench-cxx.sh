#!/usr/bin/env bash
# The hook cost from C++ through the C ABI, as a tt_metal process sees it:
# ffi_tests/bench.cpp built with -O2 against target/release/libmemtrack.so,
# run twice in one go -- tracking off, then under `memtrack record` (a
# reader in another process writing the record file) -- each time next to
# an empty function exported from another shared library.
#
# usage: scripts/bench-cxx.sh [--threads N] [--events N] [--rounds R]
#        (after `cargo build --release`)
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
lost=$("$release/memtrack" report "$work/bench.mtr" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["lost"])')

python3 - "$off" "$on" "$lost" <<'PY'
import json, sys
off, on, lost = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
assert not off["enabled"] and on["enabled"], "tracking state is not what the run expects"
print(f"C++ through the C ABI: {off['threads']} thread(s), {off['events']} events per thread per round, "
      f"median of {off['rounds']} rounds (ns per event per thread)")
print(f"{'':34}{'empty call':>12}{'memtrack':>12}{'difference':>12}")
for name, row in (("tracking off", off), ("tracking on, memtrack record", on)):
    print(f"{name:34}{row['empty_call_ns']:12.2f}{row['hook_ns']:12.2f}{row['hook_ns'] - row['empty_call_ns']:12.2f}")
print(f"records lost with the reader attached: {lost}")
PY
