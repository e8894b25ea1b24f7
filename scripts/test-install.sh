#!/usr/bin/env bash
# Tests scripts/install.sh the way a C or C++ project uses an installed
# libmemtrack, in a temporary prefix:
#
#  1. the installed file set (libraries, every include/memtrack*.h*, the CMake
#     package, the pkg-config files);
#  2. pkg-config: a C client built with `pkg-config --cflags --libs memtrack`
#     (and memtrack-static), run against the installed library;
#  3. CMake, after moving the prefix (the package is relocatable):
#     ffi_tests/cmake does find_package(memtrack), links memtrack::memtrack
#     and memtrack::memtrack_static, ctest runs both clients; version checks;
#  4. every client's ring, read back with `memtrack status --json`, holds
#     exactly the workload the client recorded.
#
# Needs cmake, pkg-config, cc, c++ and jq (.ci/run installs them with apt-get).
# Usage: scripts/test-install.sh    (builds with `cargo build --release`)
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
    echo "test-install: $passed passed, 1 failed" >&2
    exit 1
}

for tool in cmake pkg-config cc c++ jq; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install -y cmake pkg-config jq)"
done

# The tests set their own rings; a ring from the caller's environment would
# turn tracking on in the clients before memtrack_init.
unset MEMTRACK_RING
export MEMTRACK_CAPACITY=1024

echo "== cargo build --release"
cargo build --release --workspace --quiet
target_dir=${CARGO_TARGET_DIR:-$root/target}
memtrack="$target_dir/release/memtrack"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrack-test-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# check_ring RING DEVICE PROCESS_NAME: the ring holds exactly the clients'
# workload (see ffi_tests/cmake/main.cpp), recorded by one process that exited.
check_ring() {
    local ring=$1 device=$2 name=${3:0:15} status got want
    status=$("$memtrack" status --ring "$ring" --json) || fail "memtrack status --ring $ring"
    got=$(jq -c '[.usage[] | {device_id, kind, live_bytes, live_buffers}] | sort_by(.kind)' <<<"$status")
    want="[{\"device_id\":$device,\"kind\":\"DRAM\",\"live_bytes\":8192,\"live_buffers\":3},{\"device_id\":$device,\"kind\":\"L1\",\"live_bytes\":1000,\"live_buffers\":1}]"
    [ "$got" = "$want" ] || fail "$ring: usage $got, expected $want"
    got=$(jq -c '.capacities' <<<"$status")
    want="[{\"bytes\":1073741824,\"device_id\":$device,\"kind\":\"DRAM\"}]"
    [ "$got" = "$want" ] || fail "$ring: capacities $got, expected $want"
    got=$(jq -c '[.processes[] | {name, state}]' <<<"$status")
    want="[{\"name\":\"$name\",\"state\":\"exited\"}]"
    [ "$got" = "$want" ] || fail "$ring: processes $got, expected $want"
    got=$(jq -c '.records.dropped' <<<"$status")
    [ "$got" = 0 ] || fail "$ring: $got records dropped"
    pass "$ring holds the workload of $name on device $device"
}

# check_links BINARY LIBRARY_PATH_OR_NONE: where the dynamic loader finds libmemtrack.
check_links() {
    local found
    found=$(ldd "$1" | awk '$1 == "libmemtrack.so" {print $3}')
    if [ "$2" = none ]; then
        [ -z "$found" ] || fail "$1 is linked statically but loads $found"
        pass "$1 does not load libmemtrack.so"
    else
        [ "$found" = "$2" ] || fail "$1 loads libmemtrack.so from '${found:-nowhere}', expected $2"
        pass "$1 loads $2"
    fi
}

echo "== install"
prefix="$tmp/prefix"
scripts/install.sh --prefix "$prefix" >/dev/null
want=$(
    {
        printf '%s\n' lib/libmemtrack.so lib/libmemtrack.a \
            lib/cmake/memtrack/memtrackConfig.cmake lib/cmake/memtrack/memtrackConfigVersion.cmake \
            lib/pkgconfig/memtrack.pc lib/pkgconfig/memtrack-static.pc
        for header in include/memtrack*.h*; do echo "$header"; done
    } | sort
)
got=$(cd "$prefix" && find . -type f | sed 's|^\./||' | sort)
[ "$got" = "$want" ] || fail "installed files differ:"$'\n'"$(diff <(echo "$want") <(echo "$got"))"
pass "installed files: $(echo "$got" | tr '\n' ' ')"
for header in include/memtrack*.h*; do
    cmp -s "$header" "$prefix/$header" || fail "$prefix/$header differs from $header"
done
cmp -s "$target_dir/release/libmemtrack.so" "$prefix/lib/libmemtrack.so" || fail "libmemtrack.so differs"
pass "headers and libraries are the built ones"
DESTDIR="$tmp/stage" scripts/install.sh --prefix /opt/memtrack >/dev/null
grep -qx 'prefix=/opt/memtrack' "$tmp/stage/opt/memtrack/lib/pkgconfig/memtrack.pc" \
    || fail "DESTDIR install: memtrack.pc does not name the final prefix"
[ -f "$tmp/stage/opt/memtrack/lib/libmemtrack.so" ] || fail "DESTDIR install: no library under DESTDIR"
pass "DESTDIR stages files that name the final prefix"

echo "== pkg-config: a C client"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
version=$(pkg-config --modversion memtrack)
[ "$version" = "$(pkg-config --modversion memtrack-static)" ] || fail "memtrack.pc and memtrack-static.pc disagree"
[ "$(pkg-config --variable=includedir memtrack)" = "$prefix/include" ] || fail "pkg-config includedir"
pass "pkg-config finds memtrack $version"
libdir=$(pkg-config --variable=libdir memtrack)
# shellcheck disable=SC2046 # pkg-config's output is a list of words
cc -std=c11 -Wall -Wextra -Werror -pedantic ffi_tests/cmake/client.c -o "$tmp/c_shared" \
    $(pkg-config --cflags --libs memtrack) -Wl,-rpath,"$libdir"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -pedantic ffi_tests/cmake/client.c -o "$tmp/c_static" \
    $(pkg-config --cflags --libs memtrack-static)
check_links "$tmp/c_shared" "$prefix/lib/libmemtrack.so"
check_links "$tmp/c_static" none
"$tmp/c_shared" "$tmp/ring-c-shared" 1
"$tmp/c_static" "$tmp/ring-c-static" 2
check_ring "$tmp/ring-c-shared" 1 c_shared
check_ring "$tmp/ring-c-static" 2 c_static

echo "== CMake: find_package(memtrack) from a moved prefix"
moved="$tmp/moved-prefix"
mv "$prefix" "$moved"
unset PKG_CONFIG_PATH
build="$tmp/build"
cmake -S ffi_tests/cmake -B "$build" -DCMAKE_PREFIX_PATH="$moved" -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 \
    || { cat "$tmp/cmake.log"; fail "cmake configure"; }
grep -q "memtrack $version from $moved/lib/cmake/memtrack" "$tmp/cmake.log" \
    || { cat "$tmp/cmake.log"; fail "find_package did not find memtrack $version in $moved"; }
pass "find_package(memtrack 0.1) found $version in the moved prefix"
cmake --build "$build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; fail "cmake --build"; }
pass "built memtrack_client_shared and memtrack_client_static"
check_links "$build/memtrack_client_shared" "$moved/lib/libmemtrack.so"
check_links "$build/memtrack_client_static" none
(cd "$build" && ctest --output-on-failure --no-tests=error) || fail "ctest"
check_ring "$build/ring-shared" 3 memtrack_client_shared
check_ring "$build/ring-static" 3 memtrack_client_static

# memtrackConfigVersion.cmake: which requests this version satisfies.
ours_minor=$(cut -d. -f1,2 <<<"$version")
for request in "$ours_minor" "$version" "99.0" "$(cut -d. -f1 <<<"$version").$(($(cut -d. -f2 <<<"$version") + 1))"; do
    probe="$tmp/probe-$request"
    mkdir -p "$probe"
    printf 'cmake_minimum_required(VERSION 3.17)\nproject(probe NONE)\nfind_package(memtrack %s QUIET)\nmessage(STATUS "found=${memtrack_FOUND}")\n' \
        "$request" >"$probe/CMakeLists.txt"
    found=$(cmake -S "$probe" -B "$probe/build" -DCMAKE_PREFIX_PATH="$moved" 2>&1) \
        || fail "find_package(memtrack $request QUIET) is an error:"$'\n'"$found"
    found=$(sed -n 's/^-- found=//p' <<<"$found")
    case "$request" in
        "$ours_minor" | "$version") want=1 ;;
        *) want=0 ;;
    esac
    [ "$found" = "$want" ] || fail "find_package(memtrack $request) found='$found', expected '$want'"
done
pass "find_package accepts $ours_minor and $version, refuses newer versions"

echo "test-install: $passed passed, 0 failed"
