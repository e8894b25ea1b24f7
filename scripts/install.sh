#!/usr/bin/env bash
# Installs a built libmemtrack for C and C++ projects:
#
#   PREFIX/lib/libmemtrack.so, libmemtrack.a
#   PREFIX/include/memtrack*.h*             (memtrack.h, memtrack.hpp, ...)
#   PREFIX/lib/cmake/memtrack/memtrackConfig.cmake, memtrackConfigVersion.cmake
#   PREFIX/lib/pkgconfig/memtrack.pc, memtrack-static.pc
#
# Usage (from anywhere, after `cargo build --release`):
#
#   scripts/install.sh --prefix DIR [--libdir DIR] [--includedir DIR] [--build-dir DIR]
#
# --libdir and --includedir default to PREFIX/lib and PREFIX/include (a
# relative value is taken under PREFIX). --build-dir is where cargo put the
# libraries (default: $CARGO_TARGET_DIR/release, else target/release). The
# DESTDIR environment variable stages the files under DESTDIR while the
# installed files name PREFIX, as `make install` does.
set -euo pipefail

die() {
    echo "install.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "$0"
}

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=""
libdir=""
includedir=""
build_dir="${CARGO_TARGET_DIR:-$root/target}/release"

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --libdir) libdir=${2:?--libdir needs a directory}; shift 2 ;;
        --libdir=*) libdir=${1#*=}; shift ;;
        --includedir) includedir=${2:?--includedir needs a directory}; shift 2 ;;
        --includedir=*) includedir=${1#*=}; shift ;;
        --build-dir) build_dir=${2:?--build-dir needs a directory}; shift 2 ;;
        --build-dir=*) build_dir=${1#*=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[ -n "$prefix" ] || die "--prefix DIR is required (see --help)"
case "$prefix" in
    /*) ;;
    *) prefix="$(pwd)/$prefix" ;;
esac
under_prefix() {
    case "$1" in
        /*) echo "${1%/}" ;;
        *) echo "${prefix%/}/${1%/}" ;;
    esac
}
prefix=$(under_prefix "$prefix")
[ -n "$prefix" ] || prefix=/
libdir=$(under_prefix "${libdir:-lib}")
includedir=$(under_prefix "${includedir:-include}")
cmakedir="$libdir/cmake/memtrack"
pkgconfigdir="$libdir/pkgconfig"

# The version is the library package's: the `version` of [package] in Cargo.toml.
version=$(awk '/^\[/{in_pkg = ($0 == "[package]")} in_pkg && /^version *=/{gsub(/[" ]/, "", $0); sub(/^version=/, "", $0); print; exit}' "$root/Cargo.toml")
[[ "$version" =~ ^([0-9]+)\.([0-9]+)\.[0-9]+ ]] || die "cannot read the package version from $root/Cargo.toml"
version_major=${BASH_REMATCH[1]}
version_minor=${BASH_REMATCH[2]}

for lib in libmemtrack.so libmemtrack.a; do
    [ -f "$build_dir/$lib" ] || die "$build_dir/$lib not found: run \`cargo build --release\` first (or pass --build-dir)"
done
headers=("$root"/include/memtrack*.h*)
[ -f "${headers[0]}" ] || die "no headers in $root/include"

# System libraries that libmemtrack.a needs, as `cargo rustc --print
# native-static-libs` lists them for this target (scripts/test-install.sh
# links a static client with each list below, so a stale one fails there).
static_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
static_libs_cmake="gcc_s;util;rt;pthread;m;dl"

# Relative path from the CMake package directory back to PREFIX, so the
# installed tree can be moved.
prefix_from_config=$(realpath -m --relative-to="$cmakedir" "$prefix")
libdir_rel=$(realpath -m --relative-to="$prefix" "$libdir")
includedir_rel=$(realpath -m --relative-to="$prefix" "$includedir")

dest=${DESTDIR:-}
dest=${dest%/}
render() { # template output
    sed -e "s|@PREFIX@|$prefix|g" \
        -e "s|@LIBDIR@|$libdir|g" \
        -e "s|@INCLUDEDIR@|$includedir|g" \
        -e "s|@VERSION@|$version|g" \
        -e "s|@VERSION_MAJOR@|$version_major|g" \
        -e "s|@VERSION_MINOR@|$version_minor|g" \
        -e "s|@STATIC_LINK_LIBS@|$static_libs|g" \
        -e "s|@STATIC_LINK_LIBS_CMAKE@|$static_libs_cmake|g" \
        -e "s|@PREFIX_FROM_CONFIG_DIR@|$prefix_from_config|g" \
        -e "s|@LIBDIR_REL@|$libdir_rel|g" \
        -e "s|@INCLUDEDIR_REL@|$includedir_rel|g" \
        "$root/cmake/$1" >"$2.tmp"
    if grep -n '@[A-Z_]*@' "$2.tmp" >&2; then
        rm -f "$2.tmp"
        die "unsubstituted variable in $root/cmake/$1"
    fi
    chmod 0644 "$2.tmp"
    mv "$2.tmp" "$2"
}

install -d "$dest$libdir" "$dest$includedir" "$dest$cmakedir" "$dest$pkgconfigdir"
install -m 0755 "$build_dir/libmemtrack.so" "$dest$libdir/libmemtrack.so"
install -m 0644 "$build_dir/libmemtrack.a" "$dest$libdir/libmemtrack.a"
install -m 0644 "${headers[@]}" "$dest$includedir/"
render memtrackConfig.cmake.in "$dest$cmakedir/memtrackConfig.cmake"
render memtrackConfigVersion.cmake.in "$dest$cmakedir/memtrackConfigVersion.cmake"
render memtrack.pc.in "$dest$pkgconfigdir/memtrack.pc"
render memtrack-static.pc.in "$dest$pkgconfigdir/memtrack-static.pc"

echo "installed memtrack $version into $dest$prefix:"
for f in "$dest$libdir/libmemtrack.so" "$dest$libdir/libmemtrack.a" \
    "${headers[@]/#$root\/include/$dest$includedir}" \
    "$dest$cmakedir/memtrackConfig.cmake" "$dest$cmakedir/memtrackConfigVersion.cmake" \
    "$dest$pkgconfigdir/memtrack.pc" "$dest$pkgconfigdir/memtrack-static.pc"; do
    echo "  $f"
done
