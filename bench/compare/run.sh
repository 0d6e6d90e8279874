#!/usr/bin/env bash
# kmsfs beside native, bindfs, gocryptfs and securefs: one command, as root, on Debian 12.
#
#   bench/compare/run.sh            # the full run (3 rounds, 512 MiB, 256 MiB, 10 s fio, ~25 min)
#   bench/compare/run.sh --quick    # smoke test: small sizes, 1 round (~3-5 min)
#
# Installs what it needs (gocryptfs securefs bindfs fio + scripts/install-deps.sh), builds kmsfs
# (scripts/build.sh release) unless told not to, starts one kmsfs-keyd (state on the disk, durable
# audit), and then, round by round, runs every workload on every system on a tmpfs and on a disk
# backing store, interleaved (A B C D E, A B C D E, ...) so machine noise hits all alike. Prints a
# markdown table of medians and ratios and writes it to bench/results/<date>-<host>.md.
# What each workload is and how caches are made cold: docs/benchmarks.md.
#
# Knobs (environment):
#   BENCH_ROUNDS=3            rounds (each: every system on every backing store, then keyd alone)
#   BENCH_SEQ_MIB=512         sequential write/read size (1 MiB writes, then fsync)
#   BENCH_RAND_MIB=256        file size for the fio random 4 KiB read/write
#   BENCH_FIO_SECONDS=10      fio runtime per random workload (time_based)
#   BENCH_TREE=/usr/include   directory tarred once for the untar workload
#   BENCH_TREE_MAX_FILES=0    0 = the whole tree; N = only its first N regular files
#   BENCH_KEYD_SECONDS=5      keyd_bench seconds per (operation, clients)
#   BENCH_SYSTEMS="native bindfs gocryptfs securefs kmsfs"   subset/order of systems
#   BENCH_BACKINGS="tmpfs disk"                              subset/order of backing stores
#   BENCH_DISK_DIR=/var/tmp   where the disk backing store and keyd's state live
#   BENCH_STEP_TIMEOUT=600    seconds before one workload step is declared hung (then killed)
#   KMSFS_BUILD_DIR=<root>/build   kmsfs binaries (kmsfs, kmsfs-keyd, kmsctl, keyd_bench)
#   BENCH_NO_BUILD=1          do not build; use KMSFS_BUILD_DIR as it is
#   BENCH_NO_INSTALL=1        do not apt-get install anything (fail clearly if something lacks)
#   BENCH_RESULTS_DIR=<root>/bench/results   where the .md (and the raw .tsv) go
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/bench/compare

quick=0
for a in "$@"; do
  case $a in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done
if ((quick)); then
  d_rounds=1 d_seq=64 d_rand=32 d_fio=3 d_tree_max=600 d_keyd=1
else
  d_rounds=3 d_seq=512 d_rand=256 d_fio=10 d_tree_max=0 d_keyd=5
fi
rounds=${BENCH_ROUNDS:-$d_rounds}
seq_mib=${BENCH_SEQ_MIB:-$d_seq}
rand_mib=${BENCH_RAND_MIB:-$d_rand}
fio_s=${BENCH_FIO_SECONDS:-$d_fio}
tree=${BENCH_TREE:-/usr/include}
tree_max=${BENCH_TREE_MAX_FILES:-$d_tree_max}
keyd_s=${BENCH_KEYD_SECONDS:-$d_keyd}
systems=${BENCH_SYSTEMS:-native bindfs gocryptfs securefs kmsfs}
backings=${BENCH_BACKINGS:-tmpfs disk}
disk_dir=${BENCH_DISK_DIR:-/var/tmp}
step_timeout=${BENCH_STEP_TIMEOUT:-600}
build=${KMSFS_BUILD_DIR:-$root/build}
results_dir=${BENCH_RESULTS_DIR:-$root/bench/results}

die() { echo "run.sh: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for n in "$rounds" "$seq_mib" "$rand_mib" "$fio_s" "$tree_max" "$keyd_s" "$step_timeout"; do
  [[ $n =~ ^[0-9]+$ ]] || die "sizes, rounds and seconds must be non-negative integers (got '$n')"
done
((rounds > 0 && seq_mib > 0 && rand_mib > 0 && fio_s > 0 && keyd_s > 0)) \
  || die "rounds, sizes and seconds must be > 0"
for s in $systems; do
  case $s in native|bindfs|gocryptfs|securefs|kmsfs) ;; *) die "unknown system '$s'" ;; esac
done
for b in $backings; do
  case $b in tmpfs|disk) ;; *) die "unknown backing store '$b' (tmpfs, disk)" ;; esac
done
[[ $(id -u) -eq 0 ]] || die "must run as root (mounts, drop_caches, apt-get)"
[[ -c /dev/fuse ]] || die "/dev/fuse is missing: this host cannot mount FUSE file systems"
[[ -d $tree ]] || die "BENCH_TREE=$tree is not a directory"
[[ -d $disk_dir ]] || die "BENCH_DISK_DIR=$disk_dir is not a directory"

# --- what we need -------------------------------------------------------------------------------
if [[ -z ${BENCH_NO_INSTALL:-} ]]; then
  "$root/scripts/install-deps.sh" >&2
  need=()
  for p in gocryptfs securefs bindfs fio tar findutils coreutils procps util-linux python3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
for t in gocryptfs securefs bindfs fio tar python3 timeout mountpoint dd findmnt; do
  command -v "$t" >/dev/null || die "'$t' is not installed (apt-get install it, or drop BENCH_NO_INSTALL)"
done
if [[ -z ${BENCH_NO_BUILD:-} ]]; then
  if [[ $build == "$root/build" ]]; then
    log "building kmsfs (scripts/build.sh release)"
    "$root/scripts/build.sh" release >/dev/null
  else
    [[ -f $build/build.ninja ]] || die "KMSFS_BUILD_DIR=$build is not a configured build directory"
    log "building kmsfs in $build"
    ninja -C "$build" -j "${KMSFS_JOBS:-$(nproc)}" kmsfs kmsfs-keyd kmsctl keyd_bench >/dev/null
  fi
fi
kmsfs_bin=$build/fs/kmsfs
keyd_bin=$build/keyd/kmsfs-keyd
ctl_bin=$build/keyd/ctl/kmsctl
keyd_bench_bin=$build/bench/keyd_bench
for b in "$kmsfs_bin" "$keyd_bin" "$ctl_bin" "$keyd_bench_bin"; do
  [[ -x $b ]] || die "missing $b (build kmsfs kmsfs-keyd kmsctl keyd_bench, or unset BENCH_NO_BUILD)"
done

# --- the work area, and the promise to leave nothing behind -------------------------------------
work=$(mktemp -d "$disk_dir/kmsfs-compare-XXXXXX")
tmpfs_dir=$work/tmpfs        # a private tmpfs: the RAM backing store (and the tarball's home)
disk_base=$work/disk         # the disk backing store
mnt_base=$work/mnt
logs=$work/logs
mkdir -p "$tmpfs_dir" "$disk_base" "$mnt_base" "$logs" "$work/keyd"
keyd_pid=
cur_pid=      # the FUSE daemon of the system under test, while one is mounted
cur_mnt=
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ -n $cur_mnt ]]; then force_unmount "$cur_mnt" "$cur_pid"; fi
  # Anything still mounted below the work area (a step that died half-way): lazy unmount.
  awk -v w="$work/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    [[ $m == "$tmpfs_dir" ]] || timeout -k 5 20 umount -l "$m" 2>/dev/null
  done
  if [[ -n $keyd_pid ]]; then kill "$keyd_pid" 2>/dev/null; wait "$keyd_pid" 2>/dev/null; fi
  is_mounted "$tmpfs_dir" && { umount "$tmpfs_dir" || umount -l "$tmpfs_dir"; }
  if ((rc != 0)) && [[ -d $logs ]]; then
    mkdir -p "$results_dir" 2>/dev/null && cp -r "$logs" "$results_dir/failed-run-logs-$$" 2>/dev/null \
      && echo "run.sh: failed; daemon logs kept in $results_dir/failed-run-logs-$$" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sizes: the largest thing alive at once is the 512 MiB file of one system (ciphertext grows by a
# few percent), the tree (twice: tarball + extracted copy) and the rand file.
tree_kib=$(du -sk "$tree" | cut -f1)
data_mib=$((seq_mib > rand_mib ? seq_mib : rand_mib))
need_mib=$((data_mib + seq_mib * 2 + rand_mib * 2 + tree_kib * 3 / 1024 + 256))
avail_disk_mib=$(($(df -Pk "$work" | awk 'NR==2 {print $4}') / 1024))
((avail_disk_mib > need_mib)) || die "$disk_dir has ${avail_disk_mib} MiB free, need ~${need_mib} MiB"
mem_avail_mib=$(($(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) / 1024))
((mem_avail_mib > need_mib + 1024)) || die "only ${mem_avail_mib} MiB of memory available, need ~$((need_mib + 1024)) MiB for the tmpfs"
mount -t tmpfs -o "size=${need_mib}m,mode=0755" kmsfs-compare "$tmpfs_dir"

# --- helpers ------------------------------------------------------------------------------------
now() { echo "$EPOCHREALTIME"; }
calc() { python3 -c "print(f'{($1):.$2f}')"; }   # calc EXPRESSION DECIMALS
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }   # utime+stime
clk_tck=$(getconf CLK_TCK)
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
raw=$work/raw.tsv            # round backing system metric value
: >"$raw"
record() {  # record SYSTEM METRIC VALUE (a value that is not a number is a failure, not a sample)
  if [[ $3 =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$backing" "$1" "$2" "$3" >>"$raw"
    record_log "$@"
  else
    fail_note "$1" "$2" "no valid figure ('$3')"
  fi
}
failures=$work/failures.txt
: >"$failures"
fail_note() {  # system step message: kept for the report (one line), and the run goes on
  local msg=${3//$'\n'/ }
  printf -- '- round %s, %s, %s, %s: %s\n' "$round" "$backing" "$1" "$2" "$msg" >>"$failures"
  log "FAILED: $1 $2 on $backing: $msg"
}
# run a workload command with the step timeout; stdout to a file; returns its status
step() {
  local rc=0
  timeout -k 10 "$step_timeout" "$@" || rc=$?
  ((rc == 124 || rc == 137)) && echo "(hung: killed after ${step_timeout} s) " >&2
  return "$rc"
}
# Mount-table look-ups that never touch the mount itself: stat(2) of a hung FUSE mount blocks.
is_mounted() { awk -v m="$1" '$5 == m {f = 1} END {exit !f}' /proc/self/mountinfo; }
mount_dev() { awk -v m="$1" '$5 == m {d = $3} END {print d}' /proc/self/mountinfo; }
# A progress line per measured figure (the run is long and unattended: show where it is).
record_log() { log "    $1 $2 = $3"; }

# A FUSE mount whose daemon hangs cannot be unmounted politely (umount waits on it): SIGKILL the
# daemon, which aborts the connection (every waiting request fails with ENOTCONN), then unmount,
# lazily if something still holds it.
force_unmount() {
  local m=$1 pid=$2
  if [[ -n $pid ]]; then
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  if is_mounted "$m"; then
    timeout -k 5 20 umount "$m" 2>/dev/null || timeout -k 5 20 umount -l "$m" 2>/dev/null
  fi
  cur_pid= cur_mnt=
}

# --- keyd: one process for the whole run, state on the disk as in production -------------------
(umask 077; head -c 32 /dev/urandom >"$work/keyd/root.key")
sock=$work/keyd/keyd.sock
"$keyd_bin" --state-dir "$work/keyd/state" --socket "$sock" --root-key-file "$work/keyd/root.key" \
  --log-level warn </dev/null >"$logs/keyd.log" 2>&1 &
keyd_pid=$!
for _ in $(seq 200); do
  [[ -S $sock ]] && "$ctl_bin" --socket "$sock" ping >/dev/null 2>&1 && break
  kill -0 "$keyd_pid" 2>/dev/null || { cat "$logs/keyd.log" >&2; die "kmsfs-keyd exited at start"; }
  sleep 0.05
done
"$ctl_bin" --socket "$sock" ping >/dev/null || die "kmsfs-keyd did not answer on $sock"
new_key() {
  "$ctl_bin" --socket "$sock" create-key --description "$1" --output json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["KeyMetadata"]["KeyId"])'
}
fs_key=$(new_key "compare bench volumes") || die "kmsctl create-key failed"
bench_key=$(new_key "compare bench keyd_bench") || die "kmsctl create-key failed"
keyd_state_fs=$(df --output=fstype "$work/keyd/state" | tail -1)

# --- the data written: random bytes made once, kept in RAM ---------------------------------------
# Random, not /dev/zero, so that no system can gain from zero plaintext (holes, compression).
mkdir -p "$tmpfs_dir/src"
data=$tmpfs_dir/src/data.bin
head -c "$((data_mib * 1048576))" /dev/urandom >"$data"

# --- the tree for the untar workload: made once, kept in RAM ------------------------------------
tarball=$tmpfs_dir/src/tree.tar
tree_parent=$(dirname "$(readlink -f "$tree")")
tree_name=$(basename "$(readlink -f "$tree")")
if ((tree_max > 0)); then
  (cd "$tree_parent" && find "$tree_name" -type f | sort | awk -v n="$tree_max" 'NR <= n' >"$work/tree.list" \
    && tar -cf "$tarball" -T "$work/tree.list")
else
  tar -C "$tree_parent" -cf "$tarball" "$tree_name"
fi
tree_files=$(tar -tvf "$tarball" | grep -c '^-' || true)
tree_dirs=$(tar -tvf "$tarball" | grep -c '^d' || true)
tree_links=$(tar -tvf "$tarball" | grep -c '^l' || true)
tree_mib=$(calc "$(stat -c %s "$tarball") / 2**20" 1)
log "untar tree: $tree_files files, $tree_dirs dirs, $tree_links symlinks, tarball $tree_mib MiB"

# --- per system: prepare, mount, unmount --------------------------------------------------------
pass=kmsfs-compare-bench-passphrase   # a throwaway password for the peers' throwaway volumes
# prepare SYSTEM BASE: a fresh, empty volume (backing dir) for SYSTEM under BASE
prepare() {
  local sys=$1 base=$2
  rm -rf "$base/$sys"
  mkdir -p "$base/$sys"
  case $sys in
    native|bindfs) ;;
    gocryptfs) printf '%s\n' "$pass" >"$work/gocryptfs.pass"
               gocryptfs -init -q -passfile "$work/gocryptfs.pass" "$base/$sys" >>"$logs/gocryptfs.log" 2>&1 ;;
    # Format 4 (securefs 0.13's default). Its password KDF is turned down from argon2id
    # (6-7 s per create and per mount here, 5 mounts per cell) to 1 round of PBKDF2: it only
    # unlocks the config's master key at mount time and is not on any measured path.
    securefs) securefs create --format 4 --pbkdf pkcs5-pbkdf2-hmac-sha256 --rounds 1 \
                --pass "$pass" "$base/$sys" >>"$logs/securefs.log" 2>&1 ;;
    kmsfs) "$kmsfs_bin" init --key-id "$fs_key" --socket "$sock" "$base/$sys" >>"$logs/kmsfs.log" 2>&1 ;;
  esac
}
# mount_sys SYSTEM BASE: serves BASE/SYSTEM at $mnt_base/SYSTEM; sets cur_pid, cur_mnt, mnt.
# Ready = the mount is in the mount table (polled, not slept on); a daemon that exits first fails.
mount_sys() {
  local sys=$1 base=$2 m=$mnt_base/$1
  if [[ $sys == native ]]; then mnt=$base/native; cur_pid= cur_mnt=; return 0; fi
  mkdir -p "$m"
  # Each a simple command in the background, so that $! is the daemon itself (its CPU and RSS
  # are read from /proc/$!), not a subshell around it. All of them stay in the foreground.
  local log=$logs/$sys.log
  case $sys in
    bindfs) bindfs -f -o big_writes "$base/$sys" "$m" </dev/null >>"$log" 2>&1 & ;;
    gocryptfs) gocryptfs -f -q -nosyslog -passfile "$work/gocryptfs.pass" "$base/$sys" "$m" \
                 </dev/null >>"$log" 2>&1 & ;;
    securefs) securefs mount --pass "$pass" "$base/$sys" "$m" </dev/null >>"$log" 2>&1 & ;;
    kmsfs) "$kmsfs_bin" mount -f --socket "$sock" "$base/$sys" "$m" </dev/null >>"$log" 2>&1 & ;;
  esac
  cur_pid=$! cur_mnt=$m mnt=$m
  local i
  for ((i = 0; i < 600; i++)); do
    is_mounted "$m" && break
    kill -0 "$cur_pid" 2>/dev/null || break
    sleep 0.05
  done
  if ! is_mounted "$m"; then
    tail -5 "$logs/$sys.log" >&2
    force_unmount "$m" "$cur_pid"
    return 1
  fi
}
# umount_sys: the daemon's peak RSS is read, then a clean unmount; the daemon must exit.
umount_sys() {
  [[ -z $cur_mnt ]] && return 0
  local pid=$cur_pid m=$cur_mnt i dev
  hwm_max=$(( $(hwm_kib "$pid") > hwm_max ? $(hwm_kib "$pid") : hwm_max ))
  # The mount's read-ahead as it was while measured (a daemon may raise it after mounting).
  dev=$(mount_dev "$m")
  echo "${m##*/} $(cat "/sys/class/bdi/$dev/read_ahead_kb" 2>/dev/null || echo '?')" >>"$work/readahead.txt"
  # umount(8) waits for the daemon's answers (flush, release): bounded, then forced.
  if ! timeout -k 5 30 umount "$m" 2>>"$logs/umount.log"; then
    for ((i = 0; i < 4; i++)); do
      sleep 0.25
      is_mounted "$m" || break
      timeout -k 2 5 umount "$m" 2>/dev/null && break
    done
  fi
  if is_mounted "$m"; then force_unmount "$m" "$pid"; return 1; fi
  for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && { kill "$pid" 2>/dev/null; }
  wait "$pid" 2>/dev/null || true
  cur_pid= cur_mnt=
}
# cold SYSTEM BASE: nothing of the file system under test is in the page cache afterwards:
# FUSE mounts are unmounted (their page cache and inodes go), caches are dropped (the backing
# store's page cache on disk; tmpfs content IS memory and cannot be dropped), then remounted.
cold() { umount_sys && drop_caches && mount_sys "$1" "$2"; }

# --- one cell: every workload for one system on one backing store -------------------------------
run_cell() {
  local sys=$1 base=$2 t0 t1 c0 c1 k0 k1 out rw got errs iops
  hwm_max=0
  prepare "$sys" "$base" || { fail_note "$sys" init "volume creation failed (see the $sys log)"; return 0; }
  mount_sys "$sys" "$base" || { fail_note "$sys" mount "mount failed"; return 0; }

  # 1. sequential write: 1 MiB writes, then fsync (dd conv=fsync); the daemon's CPU around it
  c0=0 c1=0
  [[ -n $cur_pid ]] && c0=$(cpu_ticks "$cur_pid")
  k0=$(cpu_ticks "$keyd_pid")
  t0=$(now)
  if step dd if="$data" of="$mnt/seq" bs=1M count="$seq_mib" conv=fsync status=none 2>"$work/err"; then
    t1=$(now)
    [[ -n $cur_pid ]] && c1=$(cpu_ticks "$cur_pid")
    k1=$(cpu_ticks "$keyd_pid")
    record "$sys" seq_write_mibs "$(calc "$seq_mib / ($t1 - $t0)" 1)"
    [[ -n $cur_pid ]] && record "$sys" daemon_cpu_s "$(calc "($c1 - $c0) / $clk_tck * 512 / $seq_mib" 2)"
    [[ $sys == kmsfs ]] && record "$sys" keyd_cpu_s "$(calc "($k1 - $k0) / $clk_tck * 512 / $seq_mib" 2)"
    # 2. sequential read, cold (see cold()); 1 MiB read(2)s
    cold "$sys" "$base" || { fail_note "$sys" remount "remount before the sequential read failed"; return 0; }
    t0=$(now)
    if step dd if="$mnt/seq" of=/dev/null bs=1M status=none 2>"$work/err"; then
      t1=$(now)
      record "$sys" seq_read_mibs "$(calc "$seq_mib / ($t1 - $t0)" 1)"
    else
      fail_note "$sys" "sequential read" "dd: $(head -c 300 "$work/err")"
    fi
  else
    fail_note "$sys" "sequential write" "dd: $(head -c 300 "$work/err")"
  fi
  step rm -f "$mnt/seq"

  # 3. random 4 KiB reads, then random 4 KiB writes, on a RAND_MIB file; each from a cold start
  if step dd if="$data" of="$mnt/rand" bs=1M count="$rand_mib" conv=fsync status=none 2>"$work/err"; then
    for rw in randread randwrite; do
      cold "$sys" "$base" || { fail_note "$sys" remount "remount before $rw failed"; return 0; }
      out=$work/fio.json
      rm -f "$out"
      if step fio --name="$rw" --filename="$mnt/rand" --size="${rand_mib}M" --rw="$rw" --bs=4k \
           --ioengine=psync --iodepth=1 --numjobs=1 --runtime="$fio_s" --time_based \
           --invalidate=1 --output-format=json --output="$out" >"$work/err" 2>&1; then
        # "<error> <iops>" of the job, from fio's JSON
        read -r errs iops < <(python3 - "$out" "$rw" <<'EOF' || echo "parse-failed 0"
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
print(job["error"], round(job["read" if sys.argv[2] == "randread" else "write"]["iops"]))
EOF
)
        if [[ $errs == 0 ]]; then
          record "$sys" "${rw/rand/rand_}_iops" "$iops"
        else
          fail_note "$sys" "$rw" "fio error '$errs': $(tail -c 300 "$work/err")"
        fi
      else
        fail_note "$sys" "$rw" "fio: $(tail -c 300 "$work/err")"
      fi
    done
  else
    fail_note "$sys" "random file layout" "dd: $(head -c 300 "$work/err")"
  fi
  step rm -f "$mnt/rand"

  # 4. the small-file tree: untar; ls -lR after a remount; read every file after a remount; rm -rf
  step mkdir -p "$mnt/tree" || { fail_note "$sys" untar "mkdir failed"; return 0; }
  t0=$(now)
  if step tar -xf "$tarball" -C "$mnt/tree" 2>"$work/err"; then
    t1=$(now)
    record "$sys" untar_s "$(calc "$t1 - $t0" 3)"
    got=$(step find "$mnt/tree" -type f | wc -l)
    [[ $got == "$tree_files" ]] || fail_note "$sys" untar "found $got regular files after untar, the tarball has $tree_files"
    cold "$sys" "$base" || { fail_note "$sys" remount "remount before ls -lR failed"; return 0; }
    t0=$(now)
    if step ls -lR "$mnt/tree" >/dev/null 2>"$work/err"; then
      t1=$(now)
      record "$sys" ls_lR_s "$(calc "$t1 - $t0" 3)"
    else
      fail_note "$sys" "ls -lR" "$(head -c 300 "$work/err")"
    fi
    cold "$sys" "$base" || { fail_note "$sys" remount "remount before reading every file failed"; return 0; }
    t0=$(now)
    # cat of every regular file (tar to /dev/null would not read them: GNU tar skips that).
    if (cd "$mnt/tree" && step find . -type f -exec cat {} + >/dev/null 2>"$work/err"); then
      t1=$(now)
      record "$sys" read_all_s "$(calc "$t1 - $t0" 3)"
    else
      fail_note "$sys" "read every file" "$(head -c 300 "$work/err")"
    fi
  else
    fail_note "$sys" untar "tar: $(head -c 300 "$work/err")"
  fi
  t0=$(now)
  if step rm -rf "$mnt/tree" 2>"$work/err"; then
    t1=$(now)
    record "$sys" rm_rf_s "$(calc "$t1 - $t0" 3)"
  else
    fail_note "$sys" "rm -rf" "$(head -c 300 "$work/err")"
  fi

  if [[ $sys != native ]]; then
    umount_sys || fail_note "$sys" unmount "clean unmount failed (forced)"
    record "$sys" daemon_hwm_mib "$(calc "$hwm_max / 1024" 1)"
  fi
}

# --- the run ------------------------------------------------------------------------------------
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t_start=$(now)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$work/readahead.txt"
log "work area $work (disk: $(df --output=fstype "$disk_base" | tail -1)); keyd state on $keyd_state_fs"
log "rounds $rounds; systems: $systems; backing stores: $backings"
for ((round = 1; round <= rounds; round++)); do
  for backing in $backings; do
    if [[ $backing == tmpfs ]]; then base=$tmpfs_dir/back; else base=$disk_base; fi
    mkdir -p "$base"
    for sys in $systems; do
      log "round $round/$rounds: $sys on $backing"
      # In a condition, so that an unexpected error inside a cell is noted, not fatal to the run:
      # every measured step checks its own status (and a failed step records no figure).
      run_cell "$sys" "$base" || fail_note "$sys" cell "aborted (status $?)"
      # A cell that gave up half-way may have left its mount: never carry it into the next one.
      [[ -n $cur_mnt ]] && force_unmount "$cur_mnt" "$cur_pid"
      rm -rf "${base:?}/$sys"
    done
  done
  backing=keyd
  log "round $round/$rounds: keyd alone (keyd_bench, ${keyd_s}s per measurement)"
  if step "$keyd_bench_bin" --socket "$sock" --key-id "$bench_key" --seconds "$keyd_s" --clients 8 \
       >"$work/keyd_bench.out" 2>&1; then
    awk 'NF == 2 && $1 ~ /_c[0-9]+_(per_s|p99_us)$/ {print $1, $2}' "$work/keyd_bench.out" \
      | while read -r m v; do record kmsfs-keyd "$m" "$v"; done
  else
    sys=kmsfs-keyd fail_note kmsfs-keyd keyd_bench "$(tail -c 300 "$work/keyd_bench.out")"
  fi
done
record_keyd_hwm=$(hwm_kib "$keyd_pid")
round=all backing=all record kmsfs-keyd keyd_hwm_mib "$(calc "$record_keyd_hwm / 1024" 1)"
t_end=$(now)
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
"$ctl_bin" --socket "$sock" audit verify --output json 2>&1 \
  | python3 -c 'import json,sys; j=json.load(sys.stdin); print(("ok: " if j.get("Ok") else "FAILED: ") + str(j.get("Message")))' \
  >"$work/audit_verify.txt" 2>&1 || echo "kmsctl audit verify failed" >"$work/audit_verify.txt"

# --- machine details and the report -------------------------------------------------------------
host=$(hostname -s)
stamp=$(date -u +%Y-%m-%d-%H%M)
suffix=$( ((quick)) && echo "-quick" || true)
mkdir -p "$results_dir"
out_md=$results_dir/$stamp-$host$suffix.md
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }
{
  echo "started	$started"
  echo "runtime_s	$(calc "$t_end - $t_start" 0)"
  echo "mode	$( ((quick)) && echo quick || echo default)"
  echo "rounds	$rounds"
  echo "seq_mib	$seq_mib"
  echo "rand_mib	$rand_mib"
  echo "fio_s	$fio_s"
  echo "keyd_s	$keyd_s"
  echo "tree	$tree ($tree_files files, $tree_dirs directories, $tree_links symlinks; tarball $tree_mib MiB)"
  echo "systems	$systems"
  echo "backings	$backings"
  echo "cpu	$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "cores	$(nproc)"
  echo "ram	$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel	$(uname -r)"
  echo "os	$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "disk	$(df --output=fstype "$disk_base" | tail -1) on $(df --output=source "$disk_base" | tail -1) ($disk_dir)"
  echo "keyd_state	$keyd_state_fs ($disk_dir), durable audit"
  echo "load	$load_start at start, $load_end at end (1/5/15 min)"
  echo "kmsfs	$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD -- fs common keyd 2>/dev/null || echo ' (with uncommitted changes)') from $build"
  for p in gocryptfs securefs bindfs fio fuse3 libfuse3-3 libfuse2; do echo "pkg_$p	$(pkgver "$p")"; done
  echo "audit_verify	$(tr '\n' ' ' <"$work/audit_verify.txt" | head -c 200)"
  echo "readahead	$(sort "$work/readahead.txt" | uniq | tr '\n' ';')"
} >"$work/meta.tsv"
python3 "$here/report.py" "$raw" "$work/meta.tsv" "$failures" >"$out_md"
cp "$raw" "${out_md%.md}.tsv"
cat "$out_md"
log "written: $out_md (raw samples: ${out_md%.md}.tsv)"
