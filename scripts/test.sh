#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs dependencies, checks the
# include rules, builds with -Werror, runs every CTest test (unit + integration with real keyd,
# real LMDB and real FUSE mounts, crash cycles, full disks, hostile trees, the keyd request fuzzer,
# the stress test), the unit and integration tests against ASan+UBSan builds of both daemons, the
# fs suites and the stress test against TSan builds of both daemons, and a bounded fuzzing run.
#   scripts/test.sh            everything (what .ci/run calls)
#   KMSFS_FUZZ_SECONDS=60 scripts/test.sh   longer fuzzing
#   KMSFS_CRASH_CYCLES=5000 KMSFS_STRESS_SECONDS=600 scripts/test.sh   longer reliability runs
# (docs/reliability.md lists every knob; seeds are printed and can be replayed.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
fuzz_seconds=${KMSFS_FUZZ_SECONDS:-20}
start=$SECONDS
step() { echo; echo "=== $* ($((SECONDS - start))s)"; }

step "dependencies"
scripts/install-deps.sh

step "include rules"
scripts/check-deps.sh

step "release build (-Werror)"
KMSFS_WERROR=ON scripts/build.sh release >/dev/null

step "ASan+UBSan build"
KMSFS_WERROR=ON scripts/build.sh asan >/dev/null

step "TSan build"
KMSFS_WERROR=ON scripts/build.sh tsan >/dev/null

step "fuzz build (clang, libFuzzer)"
scripts/build.sh fuzz >/dev/null

step "fuzzing, ${fuzz_seconds}s per target"
scripts/run-fuzzers.sh "$root/build-fuzz" "$fuzz_seconds"

step "unit tests under ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L unit --output-on-failure -j "$(nproc)" --timeout 300

# The daemons' sanitizer reports end them with a non-zero exit (ASan/UBSan abort, TSan exit 66),
# which the suites check on every unmount and keyd stop.
step "integration tests against ASan+UBSan daemons"
KMSFS_CRASH_CYCLES=${KMSFS_SAN_CRASH_CYCLES:-40} KMSFS_KEYD_FUZZ_SECONDS=10 \
  KMSFS_STRESS_SECONDS=${KMSFS_SAN_STRESS_SECONDS:-30} \
  ctest --test-dir build-asan -L 'integration|stress' --output-on-failure --timeout 900

step "fs suites and the stress test against TSan daemons"
TSAN_OPTIONS="suppressions=$root/tests/stress/tsan.supp" KMSFS_CRASH_CYCLES=${KMSFS_SAN_CRASH_CYCLES:-40} KMSFS_KEYD_FUZZ_SECONDS=10 \
  KMSFS_STRESS_SECONDS=${KMSFS_SAN_STRESS_SECONDS:-60} \
  ctest --test-dir build-tsan -R '^(integration_fs:|integration_reliability:|stress:)' \
  --output-on-failure --timeout 900

step "all tests (release build)"
ctest --test-dir build --output-on-failure --timeout 900
echo "test.sh: all green in $((SECONDS - start))s"
