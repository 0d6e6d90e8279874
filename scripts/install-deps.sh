#!/usr/bin/env bash
# Installs every Debian 12 package kmsfs needs to build, test and run. Idempotent, non-interactive.
set -euo pipefail

PACKAGES=(
  build-essential g++ cmake ninja-build pkg-config git
  clang libclang-rt-14-dev            # libFuzzer + sanitizers for the fuzz build
  libfuse3-dev fuse3                  # FUSE (low-level API) and fusermount3
  libssl-dev openssl                  # OpenSSL 3: AES-GCM, AES-SIV, HKDF, scrypt
  liblmdb-dev lmdb-utils              # keyd state
  libspdlog-dev libfmt-dev            # logging
  catch2                              # Catch2 v2 unit tests
  nlohmann-json3-dev libcli11-dev     # JSON, command lines
  libsystemd-dev systemd              # sd_notify, socket activation, systemd-analyze
  util-linux procps psmisc python3    # setpriv, mountpoint, pkill, fuser, test tooling
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: all packages present"
