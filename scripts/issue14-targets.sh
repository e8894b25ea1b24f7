#!/usr/bin/env bash
# Issue 14's targets on this machine, in one table: the hook against the
# hardware floor (1 and 2 threads), against the socket design, disabled
# hooks against an empty call, losses, and the reader's rate into a file
# (shared ring and sub-ring). Every figure is measured here, now; the table
# names the CPU, so runs on Intel and AMD machines can be put side by side
# (docs/PERFORMANCE.md).
#
#   scripts/issue14-targets.sh [--runs N] [--events N] [--no-reader] [--no-rt] [--quick]
#
#   --runs N      `memtrack bench` runs (each the median of 5 interleaved
#                 rounds); the table shows the range over the runs (3)
#   --events N    events per thread per round (2000000)
#   --no-reader   skip the reader benchmark (criterion, ~1 minute)
#   --no-rt       the normal scheduler (CFS, what workloads run under), not chrt
#   --quick       one short run, no reader benchmark: checks that the
#                 script works (what .ci/run does); its numbers mean little
#
# Runs under `chrt -r 1` where allowed (root): a real-time class keeps other
# processes' time slices out of the rounds. Verdicts are printed, never
# enforced: these VMs are shared and noisy. Exit 1 if a measurement fails.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3 events=2000000 rounds=5 reader=1 use_rt=1
while [ $# -gt 0 ]; do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --events) events=$2; shift 2 ;;
        --no-reader) reader=0; shift ;;
        --no-rt) use_rt=0; shift ;;
        --quick) runs=1 events=200000 rounds=3 reader=0; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "issue14-targets.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cargo build --release -q -p memtrack-cli
rt=()
if [ "$use_rt" = 1 ] && chrt -r 1 true 2>/dev/null; then rt=(chrt -r 1); fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for run in $(seq 1 "$runs"); do
    echo "memtrack bench run $run of $runs (${rt[*]:-no real-time class})" >&2
    "${rt[@]}" target/release/memtrack bench --events "$events" --rounds "$rounds" --json >"$out/bench-$run.json"
done

# Criterion prints "thrpt:  [low median high]" under each benchmark; the
# median is the middle figure, in elements (records) per second.
reader_rate() {
    "${rt[@]}" env "$@" cargo bench -q -p memtrack-cli --no-default-features --bench reader -- drain_to_file 2>&1 |
        tee "$out/reader.log" |
        awk '/thrpt:/ && !done { print $4, $5; done = 1 }'   # reads to the end: an early exit would kill tee (pipefail)
}
if [ "$reader" = 1 ]; then
    echo "reader benchmark: shared ring" >&2
    reader_rate MEMTRACK_BENCH_SUBRINGS=0 >"$out/reader-shared"
    echo "reader benchmark: the writer in its sub-ring" >&2
    reader_rate MEMTRACK_BENCH_SUBRINGS=1 >"$out/reader-subring"
fi

python3 - "$out" "$runs" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" "${rt[*]:-no real-time class (CFS)}" <<'EOF'
import glob, json, os, sys

out, runs, commit, sched = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
docs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "bench-*.json")))]
vendor = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("vendor_id")), "?")

def rows(name, threads):
    return [r for d in docs for r in d["rows"] if r["name"] == name and r["threads"] == threads]

def span(values, fmt="{:.1f}"):
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"

def verdict(ok):
    return "met" if ok else "**not met**"

floor = [d["floor_ns_per_event"] for d in docs]
on1, on2 = rows("enabled", 1), rows("enabled_2_threads", 2)
# One thread in each of two processes on one device (builds before this
# row have none: the line is left out).
procs2 = rows("enabled_2_processes", 1)
socket = rows("socket", 1)
empty, off = rows("empty_call", 1), rows("disabled", 1)
lost = sum(r["lost"] or 0 for r in on1 + on2 + procs2 + socket)
r1 = [r["ratio_to_floor"] for r in on1]
r2, r2cpu = [r["ratio_to_floor"] for r in on2], [r["ratio_to_floor_cpu"] for r in on2]
speedup = [s["ns_per_event"] / e["ns_per_event"] for s, e in zip(socket, on1)]
gap = [o["ns_per_event"] - e["ns_per_event"] for o, e in zip(off, empty)]

print(f"## issue 14 targets: {docs[0]['cpu_model']} ({vendor}), clock {docs[0]['clock']}, commit {commit}")
print(f"{runs} run(s) of `memtrack bench --events {docs[0]['events']} --rounds {docs[0]['rounds']}`; "
      f"under {sched}; floor {span(floor)} ns; ranges over the runs\n")
print("| target | measured | |")
print("|---|---|---|")
print(f"| enabled hook, 1 thread, ≤ 1.5× floor | {span([r['ns_per_event'] for r in on1])} ns = {span(r1, '{:.2f}')}× "
      f"| {verdict(max(r1) <= 1.5)} |")
print(f"| enabled hook, 2 threads, ≤ 2× floor per thread | {span([r['ns_per_event'] for r in on2])} ns = "
      f"{span(r2, '{:.2f}')}× wall, {span(r2cpu, '{:.2f}')}× thread CPU | "
      f"{verdict(max(r2) <= 2)} wall, {verdict(max(r2cpu) <= 2)} CPU |")
if procs2:
    p2, p2cpu = [r["ratio_to_floor"] for r in procs2], [r["ratio_to_floor_cpu"] for r in procs2]
    print(f"| enabled hook, 2 processes on one device, ≤ 2× floor per process (as threads) | "
          f"{span([r['ns_per_event'] for r in procs2])} ns = {span(p2, '{:.2f}')}× wall, "
          f"{span(p2cpu, '{:.2f}')}× thread CPU | {verdict(max(p2) <= 2)} wall, {verdict(max(p2cpu) <= 2)} CPU |")
print(f"| ≥ 50× the socket baseline | {span([s['ns_per_event'] for s in socket], '{:.0f}')} ns → "
      f"{span(speedup, '{:.0f}')}× | {verdict(min(speedup) >= 50)} |")
print(f"| disabled within 0.5 ns of an empty call | {span([o['ns_per_event'] for o in off], '{:.2f}')} vs "
      f"{span([e['ns_per_event'] for e in empty], '{:.2f}')} ns | {verdict(max(gap) <= 0.5)} |")
print(f"| 0 lost | {lost} | {verdict(lost == 0)} |")
# The reader's CPU per record (no target of its own): on 2 vCPUs two writer
# threads and the reader share the CPUs, so per-thread wall time is about
# writer CPU + reader CPU per record (docs/PERFORMANCE.md).
for name, threads, rows_ in (("1 thread", 1, on1), ("2 threads", 2, on2), ("2 processes", 1, procs2)):
    cost = [r.get("reader_cpu_ns_per_record") for r in rows_]
    if cost and all(c is not None for c in cost):
        print(f"| (reader CPU per record, {name}) | {span(cost)} ns | – |")
for ring in ("shared", "subring"):
    path = os.path.join(out, f"reader-{ring}")
    if os.path.exists(path):
        text = open(path).read().split()
        if len(text) == 2:
            value, unit = float(text[0]), text[1]
            scale = {"Kelem/s": 1e-3, "Melem/s": 1, "Gelem/s": 1e3}.get(unit)
            rate = value * scale if scale else None
            shown = f"{rate:.1f} M records/s" if rate else " ".join(text)
            ok = verdict(rate >= 30) if rate else "?"
        else:
            shown, ok = "no figure (see the criterion output)", "?"
        where = "shared ring" if ring == "shared" else "the writer in its sub-ring"
        print(f"| reader ≥ 30 M records/s into a file, {where} | {shown} | {ok} |")
EOF
