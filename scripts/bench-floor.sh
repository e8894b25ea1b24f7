#!/usr/bin/env bash
# Where the hook's time goes on this CPU, and what the candidate ring
# protocols cost, side by side: benches/floor/floor.c built with the system
# compiler at -O2, then run (issue 14; docs/PERFORMANCE.md, "The hardware
# floor"). Needs no cargo build. x86-64 only.
#
# usage: scripts/bench-floor.sh [--smoke] [floor options: --events N --reps R
#        --capacity C --prefetch D --threads "1 2"]
#   --smoke: a run of a second or two that only checks it builds and runs
#            (CI); its numbers mean nothing.
# On a machine shared with other work, run it as `chrt -r 1 scripts/bench-floor.sh`
# (root or CAP_SYS_NICE): otherwise the writers and the consumer are seldom
# on the CPUs at the same moment, and the cross-core costs under study vanish
# from the numbers (docs/PERFORMANCE.md, "How the numbers were taken").
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -std=c11 -O2 -Wall -Wextra -Werror -pedantic -pthread -o "$work/floor" benches/floor/floor.c
if [ "${1:-}" = --smoke ]; then
    shift
    set -- --events 20000 --reps 1 "$@"
fi
"$work/floor" "$@"
