// RandomBytes: cryptographically secure random bytes from OpenSSL's DRBG (seeded by getrandom).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "common/crypto/secret.h"

namespace kmsfs::crypto {

// Fills `out`. Aborts (KMSFS_CHECK) if the DRBG fails: a nonce or key that is silently not
// random is far worse than a crash, and there is no sensible way for a caller to recover.
// Thread-safe; fork-safe (OpenSSL 3 reseeds in the child).
void RandomBytes(std::span<uint8_t> out);

template <size_t N>
std::array<uint8_t, N> RandomArray() {
  std::array<uint8_t, N> a;
  RandomBytes(a);
  return a;
}

// A fresh random secret of `size` bytes, in locked memory.
SecretBytes RandomSecret(size_t size);

// A fresh random key of the tag's size, e.g. RandomKey<DekTag>().
template <class Tag>
SecretKey<Tag> RandomKey() {
  SecretKey<Tag> k;
  RandomBytes(k.mutable_span());
  return k;
}

}  // namespace kmsfs::crypto
