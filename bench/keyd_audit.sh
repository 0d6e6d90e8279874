#!/usr/bin/env bash
# What the durable audit trail costs key use: Decrypt (and GenerateDataKey) requests/s and p99
# through a real kmsfs-keyd (bench/keyd_bench, 1 and 8 clients), with keyd's state directory
#   disk:  under /var/tmp (a real disk: every group commit of the audit trail pays an fsync), and
#   shm:   under /dev/shm (tmpfs: fsync is free, so this is the same keyd with the audit trail's
#          durability cost removed — the "audit disabled" baseline; keyd has no flag to turn the
#          audit off, by design, and the records are still written and hash-chained).
# The difference between the rows is the price of durability, not of hashing or encoding.
#   bench/keyd_audit.sh [BUILD_DIR]        (default: build; needs kmsfs-keyd, kmsctl, keyd_bench)
#   KEYD_BENCH_SECONDS=S (default 5) per measurement. Run as root (the default key policy is
#   root's). Builds nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
keyd=$build/keyd/kmsfs-keyd
ctl=$build/keyd/ctl/kmsctl
bench=$build/bench/keyd_bench
seconds=${KEYD_BENCH_SECONDS:-5}
for b in "$keyd" "$ctl" "$bench"; do
  [[ -x $b ]] || { echo "keyd_audit.sh: missing $b; build kmsfs-keyd kmsctl keyd_bench" >&2; exit 2; }
done

dirs=()
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# run_one NAME PARENT_DIR -> machine lines "NAME <metric> <value>" on stdout
run_one() {
  local name=$1 parent=$2 dir pid key
  dir=$(mktemp -d "$parent/kmsfs-bench-XXXXXX")
  dirs+=("$dir")
  head -c 32 /dev/urandom >"$dir/root.key"
  chmod 600 "$dir/root.key"
  "$keyd" --state-dir "$dir/state" --socket "$dir/keyd.sock" --root-key-file "$dir/root.key" \
    --log-level warn >"$dir/keyd.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    "$ctl" --socket "$dir/keyd.sock" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  key=$("$ctl" --socket "$dir/keyd.sock" create-key --description bench --output json \
        | sed -n 's/^ *"KeyId": "\([0-9a-f-]*\)".*/\1/p' | head -1)
  [[ -n $key ]] || { echo "keyd_audit.sh: create-key failed ($name)" >&2; cat "$dir/keyd.log" >&2; exit 1; }
  echo "# $name: state on $(df --output=fstype "$dir" | tail -1) at $dir" >&2
  "$bench" --socket "$dir/keyd.sock" --key-id "$key" --seconds "$seconds" --clients 8 \
    | tee /dev/stderr | awk -v n="$name" 'NF == 2 && $1 ~ /_c[0-9]+_/ {print n, $1, $2}'
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

results=$( { run_one disk /var/tmp; run_one shm /dev/shm; } )

get() { awk -v n="$1" -v m="$2" '$1 == n && $2 == m {print $3}' <<<"$results"; }
echo
echo "keyd: durable audit (disk, fsync per group commit) vs. fsync-free (tmpfs) — ${seconds}s each"
printf '%-18s %8s %12s %10s %12s %10s\n' operation clients "disk req/s" "disk p99" "tmpfs req/s" "tmpfs p99"
for op in decrypt generate_data_key; do
  for c in 1 8; do
    printf '%-18s %8s %12s %8sus %12s %8sus\n' "$op" "$c" \
      "$(get disk "${op}_c${c}_per_s")" "$(get disk "${op}_c${c}_p99_us")" \
      "$(get shm "${op}_c${c}_per_s")" "$(get shm "${op}_c${c}_p99_us")"
  done
done
