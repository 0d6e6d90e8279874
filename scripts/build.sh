#!/usr/bin/env bash
# Configures and builds one flavour of kmsfs: release (default), asan, tsan, fuzz.
#   scripts/build.sh [release|asan|tsan|fuzz] [extra cmake args...]
# asan and tsan build both daemons and the integration/stress tests that drive them (the tests
# find the daemons of their own build directory), so the suites run against sanitized daemons.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
flavour=${1:-release}
shift || true
jobs=${KMSFS_JOBS:-$(nproc)}
werror=${KMSFS_WERROR:-OFF}
case "$flavour" in
  release) dir=$root/build; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) dir=$root/build-asan; args=(-DCMAKE_BUILD_TYPE=Debug -DKMSFS_SANITIZE=ON) ;;
  tsan) dir=$root/build-tsan; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DKMSFS_TSAN=ON) ;;
  fuzz) dir=$root/build-fuzz
        args=(-DCMAKE_BUILD_TYPE=Debug -DKMSFS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++) ;;
  *) echo "usage: $0 [release|asan|tsan|fuzz]" >&2; exit 2 ;;
esac
# ccache when the machine has it (CI machines start without one; nothing changes there):
# CCACHE_BASEDIR makes paths relative, so another checkout of the same tree hits the cache.
if command -v ccache >/dev/null && [[ -z ${KMSFS_NO_CCACHE:-} ]]; then
  export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=1
  args+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake -S "$root" -B "$dir" -G Ninja -DKMSFS_WERROR="$werror" "${args[@]}" "$@" >/dev/null
targets=()
[[ $flavour == fuzz ]] && targets=(fuzzers)   # only the libFuzzer targets in the clang build
# The ASan build runs the unit suites and the integration suites against ASan daemons; the TSan
# build runs the fs-facing suites and the stress test (test.sh). KMSFS_ASAN_ALL=1 builds all.
# Every integration_* executable and stress_fs, whoever adds them (from ninja's target list).
mapfile -t it_targets < <(ninja -C "$dir" -t targets all |
  sed -nE 's/^((integration_[a-z0-9_]+)|stress_fs): phony$/\1/p' | sort -u)
[[ $flavour == asan && -z ${KMSFS_ASAN_ALL:-} ]] &&
  targets=(unit_common unit_keyd unit_fs "${it_targets[@]}")
[[ $flavour == tsan ]] && targets=(integration_fs integration_reliability stress_fs)
ninja -C "$dir" -j "$jobs" "${targets[@]}"
echo "$dir"
