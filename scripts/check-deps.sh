#!/usr/bin/env bash
# Enforces the include rules of STYLE.md §2: the layer graph and one owner per third-party C API.
# CMake visibility cannot do this alone (most headers live in /usr/include), so we grep.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
violation() { echo "check-deps: $1" >&2; fail=1; }

# only_in PATTERN ALLOWED_REGEX DESCRIPTION: files including PATTERN must match ALLOWED_REGEX.
only_in() {
  local pattern=$1 allowed=$2 what=$3 f
  while IFS= read -r f; do
    [[ $f =~ $allowed ]] || violation "$f includes $what (allowed only in $allowed)"
  done < <(grep -rlE --include='*.h' --include='*.cc' "^\s*#\s*include\s*[<\"]$pattern" common keyd fs bench 2>/dev/null || true)
}

only_in 'openssl/' '^common/crypto/[^/]+\.cc$' '<openssl/*> (and never in a header)'
only_in 'lmdb\.h' '^keyd/store/[^/]+\.cc$' '<lmdb.h>'
only_in 'fuse' '^fs/fuse/' '<fuse*.h>'
only_in 'systemd/sd-daemon\.h' '^(keyd/server/|fs/main\.cc|keyd/main\.cc)' '<systemd/sd-daemon.h>'
only_in 'CLI/' '(^|/)main\.cc$|^keyd/ctl/|^fs/cli/' 'CLI11'

# Layer graph.
grep_layer() {  # grep_layer DIR REGEX DESCRIPTION
  local hits
  hits=$(grep -rnE --include='*.h' --include='*.cc' "^\s*#\s*include\s*\"($2)" "$1" 2>/dev/null || true)
  [[ -z $hits ]] || violation "$3:"$'\n'"$hits"
}
grep_layer common 'fs/|keyd/' 'common/ must not include fs/ or keyd/'
grep_layer common/base 'common/(crypto|format|ipc|log)/' 'common/base depends on nothing'
grep_layer fs 'keyd/' 'fs/ must not include keyd/'
grep_layer keyd 'fs/' 'keyd/ must not include fs/'
[[ -d keyd/ctl ]] && grep_layer keyd/ctl 'keyd/[^c]|keyd/c[^t]' 'keyd/ctl sees only common/ (and itself)'
[[ -d fs/core ]] && grep_layer fs/core 'fs/fuse/' 'fs/core has no libfuse'
for d in common keyd fs bench; do grep_layer "$d" 'tests/' "$d must not include tests/"; done

if ((fail)); then exit 1; fi
echo "check-deps: include rules hold"
