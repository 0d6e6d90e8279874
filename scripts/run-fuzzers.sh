#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR for SECONDS each, seeded from tests/fuzz/corpus/<name>.
# Exits non-zero on the first finding (crash, leak, timeout, OOM).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-fuzz}
seconds=${2:-30}
shopt -s nullglob
found=0
for bin in "$build"/tests/fuzz/fuzz_*; do
  [[ -x $bin && -f $bin ]] || continue
  name=$(basename "$bin")
  work=$(mktemp -d /tmp/kmsfs-fuzz-XXXXXX)
  seeds=()
  [[ -d $root/tests/fuzz/corpus/$name ]] && seeds=("$root/tests/fuzz/corpus/$name")
  echo "fuzz: $name for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=0 \
        -artifact_prefix="$work/" "$work" "${seeds[@]}" >"$work/log" 2>&1; then
    echo "fuzz: FINDING in $name; log and artifacts in $work" >&2
    tail -40 "$work/log" >&2
    found=1
  else
    grep -E '^(#[0-9]+).*DONE|Done [0-9]+ runs' "$work/log" | tail -1 || true
    rm -rf "$work"
  fi
done
exit $found
