// Hkdf: HKDF-SHA256 key derivation (RFC 5869), extract-then-expand.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"

namespace kmsfs::crypto {

inline constexpr size_t kHkdfMaxOutputLen = 255 * 32;  // RFC 5869: L <= 255 * HashLen
inline constexpr size_t kHkdfMaxInfoLen = 1024;        // OpenSSL 3.0's HKDF info buffer

// OKM = HKDF-Expand(HKDF-Extract(salt, ikm), info, out_len), in locked memory.
// An empty salt means "no salt" (HashLen zero bytes, RFC 5869 §2.2). `info` is the domain
// separation label; every caller uses its own ("kmsfs/v1/wrap", ...).
// kInvalidArgument if ikm is empty, out_len is 0 or above kHkdfMaxOutputLen, or info is longer
// than kHkdfMaxInfoLen; kInternal if OpenSSL fails. Thread-safe.
Result<SecretBytes> Hkdf(ByteSpan ikm, ByteSpan salt, ByteSpan info, size_t out_len);

}  // namespace kmsfs::crypto
