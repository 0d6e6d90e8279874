#!/usr/bin/env bash
# What the durable audit trail costs key use: Decrypt and GenerateDataKey requests/s and p99
# through a real kmsfs-keyd (bench/keyd_bench, 1 and 8 clients), in one run, three ways:
#   disk:    the shipped kmsfs-keyd, state under /var/tmp (a real disk: every group commit of the
#            audit trail pays its fsyncs) — what issue 8 asks for;
#   noaudit: kmsfs-keyd-noaudit-bench, the same keyd/main.cc linked with an audit library built
#            with KMSFS_BENCH_DISCARD_AUDIT (bench/CMakeLists.txt): key-use records are dropped
#            unwritten. Same disk. The "audit disabled" baseline; the shipped kmsfs-keyd has no
#            way to turn the trail off, by design. No normal build makes it (EXCLUDE_FROM_ALL,
#            behind the option KMSFS_BENCH_NOAUDIT_KEYD, default OFF): when it is missing this
#            script turns the option on in BUILD_DIR and builds that one target. It starts only
#            on a state dir holding the marker file KMSFS-BENCH-ONLY (made here, in a mktemp dir)
#            and an explicit non-default --socket, and chains an "AuditDisabled" record first;
#   tmpfs:   the shipped kmsfs-keyd, state under /dev/shm (fsync is free: records are written and
#            hash-chained, durability costs nothing) — what issue 6 measures.
# Also prints keyd's peak RSS (VmHWM) per run and the number of records each trail holds, so the
# noaudit row can be seen to have written no records but its AuditDisabled one (1).
#   bench/keyd_audit.sh [BUILD_DIR]   (default: build; needs kmsfs-keyd, kmsctl, keyd_bench;
#                                      builds kmsfs-keyd-noaudit-bench if it is missing)
#   KEYD_BENCH_SECONDS=S (default 5) per measurement; KEYD_BENCH_CLIENTS=N (default 8).
#   Run as root (the default key policy is root's).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
keyd=$build/keyd/kmsfs-keyd
keyd_noaudit=$build/bench/kmsfs-keyd-noaudit-bench
ctl=$build/keyd/ctl/kmsctl
bench=$build/bench/keyd_bench
seconds=${KEYD_BENCH_SECONDS:-5}
clients=${KEYD_BENCH_CLIENTS:-8}
for b in "$keyd" "$ctl" "$bench"; do
  [[ -x $b ]] || {
    echo "keyd_audit.sh: missing $b; ninja -C $build kmsfs-keyd kmsctl keyd_bench" >&2
    exit 2
  }
done
if [[ ! -x $keyd_noaudit ]]; then
  # Never part of a normal build (bench/CMakeLists.txt): defined only with the option, and even
  # then built only when named.
  echo "keyd_audit.sh: building the bench-only $keyd_noaudit:" >&2
  echo "  cmake -S $root -B $build -DKMSFS_BENCH_NOAUDIT_KEYD=ON" \
    "&& ninja -C $build kmsfs-keyd-noaudit-bench" >&2
  cmake -S "$root" -B "$build" -DKMSFS_BENCH_NOAUDIT_KEYD=ON >/dev/null
  ninja -C "$build" kmsfs-keyd-noaudit-bench >&2
fi

dirs=()
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# run_one NAME KEYD PARENT_DIR -> machine lines "NAME <metric> <value>" on stdout
run_one() {
  local name=$1 binary=$2 parent=$3 dir pid key hwm anon mapped db records out
  dir=$(mktemp -d "$parent/kmsfs-bench-XXXXXX")
  dirs+=("$dir")
  head -c 32 /dev/urandom >"$dir/root.key"
  chmod 600 "$dir/root.key"
  # The noaudit keyd starts only on a state dir marked as a throw-away bench state.
  if [[ $binary == "$keyd_noaudit" ]]; then
    mkdir -m 700 "$dir/state"
    : >"$dir/state/KMSFS-BENCH-ONLY"
  fi
  "$binary" --state-dir "$dir/state" --socket "$dir/keyd.sock" --root-key-file "$dir/root.key" \
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
  echo "# $name: $(basename "$binary"), state on $(df --output=fstype "$dir" | tail -1) at $dir" >&2
  "$bench" --socket "$dir/keyd.sock" --key-id "$key" --seconds "$seconds" --clients "$clients" \
    | tee /dev/stderr | awk -v n="$name" 'NF == 2 && $1 ~ /_c[0-9]+_/ {print n, $1, $2}'
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")
  mapped=$(awk '/^Rss(File|Shmem):/ {s += $2} END {print s}' "/proc/$pid/status")
  db=$(( $(stat -c %s "$dir/state/data.mdb") / 1024 ))
  out=$("$ctl" --socket "$dir/keyd.sock" audit checkpoint --output json 2>&1 || true)
  records=$(sed -n 's/.*"Sequence": *\([0-9]*\).*/\1/p' <<<"$out" | head -1)
  [[ -z $records && $out == *"trail is empty"* ]] && records=0
  echo "$name peak_rss_kib $hwm"
  echo "$name rss_detail anon:${anon}KiB,mapped_files:${mapped}KiB,data.mdb:${db}KiB"
  echo "$name audit_records ${records:-?}"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}

# run_one runs inside $( ): its dirs/pids are that subshell's, so the subshell cleans up too.
results=$( trap cleanup EXIT; {
  run_one disk "$keyd" /var/tmp
  run_one noaudit "$keyd_noaudit" /var/tmp
  run_one tmpfs "$keyd" /dev/shm
} )

get() { awk -v n="$1" -v m="$2" '$1 == n && $2 == m {print $3}' <<<"$results"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", b / a; else print "?" }'; }
echo
echo "keyd with the durable audit trail on disk vs. audit disabled (same disk) vs. on tmpfs —" \
  "${seconds}s per figure, one run"
printf '%-18s %7s %11s %9s %11s %9s %9s %11s %9s\n' operation clients "disk req/s" "disk p99" \
  "noaud req/s" "noaud p99" "cost" "tmpfs req/s" "tmpfs p99"
for op in decrypt generate_data_key; do
  for c in 1 "$clients"; do
    d=$(get disk "${op}_c${c}_per_s")
    n=$(get noaudit "${op}_c${c}_per_s")
    printf '%-18s %7s %11s %7sus %11s %7sus %9s %11s %7sus\n' "$op" "$c" \
      "$d" "$(get disk "${op}_c${c}_p99_us")" "$n" "$(get noaudit "${op}_c${c}_p99_us")" \
      "$(ratio "$d" "$n")" "$(get tmpfs "${op}_c${c}_per_s")" "$(get tmpfs "${op}_c${c}_p99_us")"
  done
done
echo "cost = audit-disabled req/s / durable-audit req/s (issue 8's goal: < 2x at $clients clients)"
for n in disk noaudit tmpfs; do
  printf 'keyd %-8s peak RSS %6s KiB (at the end: %s), audit records in the trail: %s\n' "$n" \
    "$(get "$n" peak_rss_kib)" "$(get "$n" rss_detail)" "$(get "$n" audit_records)"
done
echo "anon is keyd's own memory; mapped_files is the executable plus LMDB's map of data.mdb, whose"
echo "pages keyd drops every 2048 records (AuditTrail release_map_every): it does not grow with the trail"
