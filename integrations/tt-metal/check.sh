#!/usr/bin/env bash
# Checks memtrack.patch against the real tt-metal source (the fixture's
# src/, tt-metal 622c6fb9):
#
#  1. the patch applies to a copy of src/ (git apply --check, then git apply);
#  2. every .cpp it touches compiles (the fixture's syntax-check.sh, g++
#     -fsyntax-only) with -DTT_METAL_MEMTRACK and memtrack's include/, and
#     without it;
#  3. without -DTT_METAL_MEMTRACK no memtrack code is left: each of those
#     files, preprocessed with syntax-check.sh's own include flags, names
#     memtrack nowhere (and with the switch on it does, so the check can fail).
#
# usage: integrations/tt-metal/check.sh [FIXTURE]
#        integrations/tt-metal/check.sh --locate
#   FIXTURE   the fixture directory (src/, syntax-check.sh, apt-packages.txt);
#             default: ../shared/tt-metal from the repository root, or from
#             the main worktree's root when this is a linked git worktree
#   --locate  prints the default fixture's path and exits 0, or exits 1 if
#             there is none (.ci/run runs the check only where it exists)
# Needs the Debian packages of FIXTURE/apt-packages.txt (.ci/run installs them).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
patch=$here/memtrack.patch

# ../shared/tt-metal from the repository root; a linked worktree (git
# worktree add) sits elsewhere, so its main worktree's root is tried too.
default_fixture() {
    local common
    if [ -d "$root/../shared/tt-metal" ]; then
        (cd "$root/../shared/tt-metal" && pwd)
    elif common=$(git -C "$root" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) &&
        [ -d "$common/../../shared/tt-metal" ]; then
        (cd "$common/../../shared/tt-metal" && pwd)
    else
        return 1
    fi
}

if [ "${1:-}" = --locate ]; then
    default_fixture
    exit
fi
if [ $# -ge 1 ]; then
    fixture=$1
else
    fixture=$(default_fixture) || {
        echo "check.sh: no ../shared/tt-metal next to $root (pass the fixture directory)" >&2
        exit 2
    }
fi
[ -d "$fixture" ] || { echo "check.sh: $fixture: no such fixture directory" >&2; exit 2; }
fixture=$(cd "$fixture" && pwd)
for f in "$fixture/src" "$fixture/syntax-check.sh" "$patch"; do
    [ -e "$f" ] || { echo "check.sh: $f is missing" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tt-metal-patch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tree=$tmp/src
cp -r "$fixture/src/." "$tree"

echo "== git apply memtrack.patch to a copy of $fixture/src"
# Not inside any repository above $tmp: paths are the patch's, from $tree.
export GIT_CEILING_DIRECTORIES=$tmp
(cd "$tree" && git apply --check "$patch" && git apply "$patch")
echo "applied"

mapfile -t files < <(sed -n 's|^+++ b/\(.*\.cpp\)$|\1|p' "$patch" | sort -u)
[ ${#files[@]} -gt 0 ] || { echo "check.sh: the patch touches no .cpp file" >&2; exit 1; }

echo "== syntax-check.sh with -DTT_METAL_MEMTRACK"
"$fixture/syntax-check.sh" "$tree" -I"$root/include" -DTT_METAL_MEMTRACK -- "${files[@]}"
echo "== syntax-check.sh without it"
"$fixture/syntax-check.sh" "$tree" -I"$root/include" -- "${files[@]}"

echo "== preprocessed: memtrack only with the switch"
# -E -P after syntax-check.sh's -fsyntax-only: g++ preprocesses instead,
# with exactly the include flags syntax-check.sh uses.
failed=0
for f in "${files[@]}"; do
    out=$tmp/$(basename "$f" .cpp)
    "$fixture/syntax-check.sh" "$tree" -I"$root/include" -E -P -o "$out.off.ii" -- "$f" >/dev/null
    "$fixture/syntax-check.sh" "$tree" -I"$root/include" -DTT_METAL_MEMTRACK -E -P -o "$out.on.ii" -- "$f" >/dev/null
    # __FILE__ expands to paths under $tmp, whatever $TMPDIR is: not code.
    sed -i "s|$tmp||g" "$out.off.ii" "$out.on.ii"
    off=$(grep -ci memtrack "$out.off.ii" || true)
    on=$(grep -ci memtrack "$out.on.ii" || true)
    if [ "$off" -eq 0 ] && [ "$on" -gt 0 ]; then
        echo "OK $f (off: no line names memtrack; on: $on lines do)"
    else
        echo "FAIL $f (off: $off lines name memtrack, expected 0; on: $on, expected > 0)"
        grep -i -m3 memtrack "$out.off.ii" | cut -c1-160 | sed 's/^/    /'
        failed=1
    fi
done
[ "$failed" = 0 ] || exit 1
echo "check.sh: memtrack.patch applies, compiles with and without TT_METAL_MEMTRACK, and is absent without it"
