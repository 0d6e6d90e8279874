#!/usr/bin/env bash
# The demo, from a fresh Debian 12 machine (as root): installs dependencies, builds, starts a
# private kmsfs-keyd, creates a key, initializes and mounts a volume, writes plain files, shows
# the ciphertext on disk and the audit trail, and unmounts. Leaves nothing running.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing dependencies and building"
scripts/install-deps.sh
scripts/build.sh release >/dev/null
bin=$root/build
keyd=$bin/keyd/kmsfs-keyd
ctl=$bin/keyd/ctl/kmsctl
kmsfs=$bin/fs/kmsfs
for b in "$keyd" "$ctl" "$kmsfs"; do
  [[ -x $b ]] || { echo "demo: $b was not built" >&2; exit 1; }
done

demo=$(mktemp -d /tmp/kmsfs-demo-XXXXXX)
export KMSFS_SOCKET=$demo/keyd.sock
keyd_pid=
cleanup() {
  set +e
  mountpoint -q "$demo/plain" && fusermount3 -u "$demo/plain"
  [[ -n $keyd_pid ]] && kill "$keyd_pid" 2>/dev/null && wait "$keyd_pid" 2>/dev/null
  rm -rf "$demo"
}
trap cleanup EXIT
mkdir -p "$demo/state" "$demo/cipher" "$demo/plain"
chmod 700 "$demo/state"

say "root key: 32 random bytes in a 0600 file (in production: a TPM2-sealed systemd credential)"
(umask 077; head -c 32 /dev/urandom >"$demo/root.key")
ls -l "$demo/root.key"

say "starting kmsfs-keyd (state in $demo/state, socket $KMSFS_SOCKET)"
"$keyd" --state-dir "$demo/state" --socket "$KMSFS_SOCKET" --root-key-file "$demo/root.key" \
  2>"$demo/keyd.log" &
keyd_pid=$!
for _ in $(seq 100); do [[ -S $KMSFS_SOCKET ]] && "$ctl" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$ctl" ping >/dev/null

say "kmsctl create-key"
key_id=$("$ctl" create-key --description "demo volume key" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["KeyMetadata"]["KeyId"])')
echo "KeyId: $key_id"
"$ctl" create-alias --alias-name alias/demo --target-key-id "$key_id"
"$ctl" describe-key --key-id alias/demo --output table

say "kmsfs init + mount"
"$kmsfs" init --key-id alias/demo "$demo/cipher"
"$kmsfs" info "$demo/cipher"
"$kmsfs" mount "$demo/cipher" "$demo/plain"
mountpoint "$demo/plain"

say "writing plain files through the mount"
echo "attack at dawn" >"$demo/plain/secret-plan.txt"
mkdir "$demo/plain/projects"
seq 1 20000 >"$demo/plain/projects/numbers.txt"
ls -la "$demo/plain" "$demo/plain/projects"
echo "cat secret-plan.txt: $(cat "$demo/plain/secret-plan.txt")"

say "the backing directory: names and contents are ciphertext"
find "$demo/cipher" -printf '%M %8s %P\n' | sort -k3
f=$(find "$demo/cipher" -type f -size +4k | head -1)
echo "first bytes of $(basename "$f"):"
head -c 256 "$f" | od -An -tx1 | head -8
if grep -rq "attack at dawn" "$demo/cipher" || find "$demo/cipher" | grep -q secret-plan; then
  echo "demo: plaintext found in the backing directory!" >&2; exit 1
fi
echo "grep for 'attack at dawn' and 'secret-plan' in $demo/cipher: nothing found"

say "the audit trail: every data key generated or unwrapped, with who and which path"
if "$ctl" audit list --help >/dev/null 2>&1; then
  "$ctl" audit list --output table | tail -12
  "$ctl" audit verify
else
  echo "(kmsctl audit is not built yet)"
fi

say "unmount"
fusermount3 -u "$demo/plain"
echo "demo: done"
