#!/usr/bin/env bash
# Configures and builds one flavour of kmsfs: release (default), asan, fuzz.
#   scripts/build.sh [release|asan|fuzz] [extra cmake args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
flavour=${1:-release}
shift || true
jobs=${KMSFS_JOBS:-$(nproc)}
werror=${KMSFS_WERROR:-OFF}
case "$flavour" in
  release) dir=$root/build; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) dir=$root/build-asan; args=(-DCMAKE_BUILD_TYPE=Debug -DKMSFS_SANITIZE=ON) ;;
  fuzz) dir=$root/build-fuzz
        args=(-DCMAKE_BUILD_TYPE=Debug -DKMSFS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++) ;;
  *) echo "usage: $0 [release|asan|fuzz]" >&2; exit 2 ;;
esac
cmake -S "$root" -B "$dir" -G Ninja -DKMSFS_WERROR="$werror" "${args[@]}" "$@" >/dev/null
targets=()
[[ $flavour == fuzz ]] && targets=(fuzzers)   # only the libFuzzer targets in the clang build
# The sanitizer build runs the unit suites (test.sh); integration tests use the release build.
[[ $flavour == asan && -z ${KMSFS_ASAN_ALL:-} ]] && targets=(unit_common unit_keyd unit_fs)
ninja -C "$dir" -j "$jobs" "${targets[@]}"
echo "$dir"
