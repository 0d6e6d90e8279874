// Recovery codes: a printed secret that unseals a copy of keyd's root key kept in the state
// (and so in every backup of it), for when the root key itself is lost. docs/lifecycle.md.
//
// A recovery code is 32 random bytes (256 bits) shown once, as 55 characters of Crockford
// base32 in 11 groups of 5 ("7KQ2M-..."): the 32 bytes plus a 2-byte checksum
// (SHA-256("kmsfs recovery code v1" || code)[0..2]), so a mistyped character is caught before
// any decryption is tried. Crockford's alphabet has no I, L, O or U; on input those read as
// 1, 1, 0 and are rejected (U), case and '-'/' ' are ignored.
//
// The escrow ("meta/recovery" in the state) is
//   "KRC1" || nonce(12) || AES-256-GCM(K, root key, AAD "kmsfs/v1/recovery-escrow") || tag(16)
// with K = HKDF-SHA256(ikm = code bytes, salt = "", info = "kmsfs/v1/recovery-escrow-key").
// HKDF and not scrypt: the code is already a uniformly random 256-bit key, stretching adds
// nothing. Thread-safe (no shared state).
#pragma once

#include <string>
#include <string_view>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"

namespace kmsfs::keyd {

inline constexpr size_t kRecoveryCodeBytes = 32;
inline constexpr size_t kRecoveryEscrowSize = 4 + 12 + 32 + 16;

struct RecoveryCodeTag {
  static constexpr size_t kSize = kRecoveryCodeBytes;
};
using RecoveryCode = crypto::SecretKey<RecoveryCodeTag>;

// A fresh random code.
RecoveryCode NewRecoveryCode();
// The printable form (55 characters + 10 dashes), in locked memory: it is the secret.
crypto::SecretBytes FormatRecoveryCode(const RecoveryCode& code);
// Parses what a person typed. kInvalidArgument with a message saying what is wrong (length,
// a character outside the alphabet, checksum mismatch: "a character is mistyped") — never the
// code itself.
Result<RecoveryCode> ParseRecoveryCode(std::string_view text);

// Seals `root` for escrow under `code`.
Result<Bytes> SealRootKeyEscrow(const RecoveryCode& code, const crypto::RootKey& root);
// Opens an escrow. kPermissionDenied if it does not open under `code` (another code, or the
// escrow of another state); kCorrupt if it is malformed.
Result<crypto::RootKey> OpenRootKeyEscrow(const RecoveryCode& code, ByteSpan escrow);

}  // namespace kmsfs::keyd
