// Scrypt: memory-hard passphrase stretching (RFC 7914) for the passphrase root-key source.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"

namespace kmsfs::crypto {

// scrypt cost parameters. They are stored next to the salt wherever a passphrase-derived key is
// kept, so a later release can raise the defaults without breaking old state.
//
// Defaults: N = 2^17, r = 8, p = 1: 128 MiB of memory (about 128 * r * N bytes) and about 0.3 s
// on the 2-core CI machine (OpenSSL 3.0, measured with `openssl kdf ... SCRYPT`). Percival's
// scrypt paper suggests N = 2^14 for interactive logins (~100 ms) and N = 2^20 for file
// encryption (~5 s); a root key is derived once per keyd start, so we take 8x the interactive
// cost and stay well under a second and under 256 MiB. N = 2^18 would double both
// (256 MiB, ~0.9 s).
struct ScryptParams {
  uint64_t n = uint64_t{1} << 17;  // CPU/memory cost; a power of two, >= 2
  uint32_t r = 8;                  // block size
  uint32_t p = 1;                  // parallelism
};

// Upper bound on the memory a parameter set may ask for. Parameters come from a file on disk, so
// a corrupted or hostile header must not be able to make keyd allocate without limit.
inline constexpr uint64_t kScryptMaxMemoryBytes = uint64_t{1} << 30;  // 1 GiB

// Bytes of memory OpenSSL's scrypt needs for `params` (V array + B buffers), or UINT64_MAX on
// overflow.
uint64_t ScryptMemoryBytes(const ScryptParams& params);

// Derives `out_len` bytes from `passphrase` and `salt` into locked memory.
// The salt should be >= 16 random bytes stored alongside the parameters; it is not checked here
// so that RFC 7914's published vectors can be verified. kInvalidArgument if N is not a power of
// two >= 2 or is >= 2^(16 r) (RFC 7914 §2), r or p is 0, r * p >= 2^30, the memory bound is
// exceeded, or out_len is 0 or > 1024; kInternal if OpenSSL fails. Thread-safe; takes a noticeable
// fraction of a second with the defaults, so never call it on a request path.
Result<SecretBytes> Scrypt(ByteSpan passphrase, ByteSpan salt, const ScryptParams& params,
                           size_t out_len);

}  // namespace kmsfs::crypto
