#!/usr/bin/env bash
# Compares kmsfs's AES-256-GCM (bench/crypto_bench, through crypto::Aes256Gcm) with OpenSSL's own
# figures from `openssl speed` on 4 KiB blocks. Goal: >= 90% of OpenSSL in both directions.
# Builds nothing.
#   bench/crypto.sh [path/to/crypto_bench]     (default: build/bench/crypto_bench)
#   CRYPTO_BENCH_ROUNDS=N (default 3): each figure is the best of N interleaved runs, so a burst of
#   load from elsewhere on the machine penalises neither side alone.
#
# Two OpenSSL references are printed:
#  * `openssl speed -evp aes-256-gcm` (and `-decrypt`): EVP_*Update streamed over one endless
#    message. It pays no per-block IV set-up, AAD, finalisation or tag handling, so it is an
#    upper bound that no per-block AEAD can reach; the goal is stated against it.
#  * `openssl speed -aead -evp aes-256-gcm` (and `-decrypt`): a complete AEAD message per 4 KiB
#    block (IV, 13 bytes of AAD, data, final; decrypt also sets a tag), i.e. what crypto_bench does
#    with 41 bytes of AAD (and reading the tag out on seal). The like-for-like comparison.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/bench/crypto_bench}
rounds=${CRYPTO_BENCH_ROUNDS:-3}
if [[ ! -x $bin ]]; then
  echo "crypto.sh: no crypto_bench at $bin; build it first (ninja -C build crypto_bench) or pass its path" >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "crypto.sh: openssl not found" >&2; exit 2; }

# Prints OpenSSL's 4096-byte AES-256-GCM figure in MB/s (openssl reports 1000s of bytes/s).
openssl_mbps() {
  openssl speed "$@" -elapsed -seconds 3 -bytes 4096 -evp aes-256-gcm 2>/dev/null |
    awk 'tolower($1) == "aes-256-gcm" { v = $NF; sub(/k$/, "", v); printf "%.1f\n", v / 1000 }' |
    tail -n 1
}
max() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { print (a + 0 > b + 0 ? a : b) }'; }

ossl_enc=0 ossl_dec=0 ossl_aead=0 ossl_aead_dec=0 seal=0 open=0
for ((i = 1; i <= rounds; i++)); do
  echo "crypto.sh: round $i/$rounds: openssl speed x4 (3 s each), crypto_bench (2 s per direction) ..." >&2
  ossl_enc=$(max "$ossl_enc" "$(openssl_mbps)")
  ossl_dec=$(max "$ossl_dec" "$(openssl_mbps -decrypt)")
  ossl_aead=$(max "$ossl_aead" "$(openssl_mbps -aead)")
  ossl_aead_dec=$(max "$ossl_aead_dec" "$(openssl_mbps -aead -decrypt)")
  ours=$("$bin" --seconds 2 --block 4096 --aad 41)
  seal=$(max "$seal" "$(awk '$1 == "seal_mb_per_s" { print $2 }' <<<"$ours")")
  open=$(max "$open" "$(awk '$1 == "open_mb_per_s" { print $2 }' <<<"$ours")")
done
for v in "$ossl_enc" "$ossl_dec" "$ossl_aead" "$ossl_aead_dec" "$seal" "$open"; do
  if awk -v x="$v" 'BEGIN { exit !(x + 0 <= 0) }'; then
    echo "crypto.sh: could not parse a figure (openssl: $ossl_enc $ossl_dec $ossl_aead $ossl_aead_dec, bench: $seal $open)" >&2
    exit 1
  fi
done

echo
echo "AES-256-GCM, 4096-byte blocks, best of $rounds ($(openssl version | awk '{print $1, $2}'), $(nproc) CPUs)"
awk -v s="$seal" -v o="$open" -v e="$ossl_enc" -v d="$ossl_dec" -v a="$ossl_aead" \
    -v ad="$ossl_aead_dec" 'BEGIN {
  printf "%-5s %11s %19s %7s %7s  %19s %7s\n", "op", "kmsfs MB/s", "openssl speed MB/s", "ratio",
         "goal", "openssl -aead MB/s", "ratio"
  rs = 100 * s / e; ro = 100 * o / d; ras = 100 * s / a; rao = 100 * o / ad
  printf "%-5s %11.1f %19.1f %6.1f%% %7s  %19.1f %6.1f%%\n", "seal", s, e, rs,
         (rs >= 90 ? "met" : "MISSED"), a, ras
  printf "%-5s %11.1f %19.1f %6.1f%% %7s  %19.1f %6.1f%%\n", "open", o, d, ro,
         (ro >= 90 ? "met" : "MISSED"), ad, rao
}'
