// Sha256, Sha256Hasher and HmacSha256: digests for the audit hash chain, ids and integrity checks.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/base/bytes.h"

namespace kmsfs::crypto {

inline constexpr size_t kSha256Len = 32;
using Sha256Digest = std::array<uint8_t, kSha256Len>;

// Incremental SHA-256. Hashing cannot fail short of memory exhaustion or a broken OpenSSL
// install, so failures abort (KMSFS_CHECK) instead of burdening every caller with a Status.
// Move-only; not thread-safe (one hasher per thread).
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(Sha256Hasher&&) noexcept;
  Sha256Hasher& operator=(Sha256Hasher&&) noexcept;
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void Update(ByteSpan data);
  // Returns the digest of everything since construction or the previous Finish, and starts over.
  Sha256Digest Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// SHA-256 of the concatenation of `parts` (anything convertible to ByteSpan), e.g.
// Sha256(AsBytes("abc")) or Sha256(prev_hash, record_bytes).
template <class... Parts>
Sha256Digest Sha256(const Parts&... parts) {
  Sha256Hasher h;
  (h.Update(ByteSpan(parts)), ...);
  return h.Finish();
}

// HMAC-SHA256(key, data) (RFC 2104). Any key length is accepted (long keys are hashed first,
// per the RFC). Compare MACs with ConstantTimeEqual (secret.h), never ==. Aborts like
// Sha256Hasher if OpenSSL fails. Thread-safe.
Sha256Digest HmacSha256(ByteSpan key, ByteSpan data);

}  // namespace kmsfs::crypto
