// WrappedBlob: the versioned byte layout of a wrapped key / KMS ciphertext (spec: docs/format.md).
// Parse/Serialize only: no I/O and no crypto. common/crypto/wrap.h seals and opens it.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "common/base/bytes.h"
#include "common/base/status.h"

namespace kmsfs::format {

// Layout v1 (all integers big-endian):
//   magic "KMWB" | version u8 (=1) | key_id_len u8 | key_id (1..64 bytes, [A-Za-z0-9-]) |
//   key_version u32 (>=1) | salt[16] | nonce[12] | ct_len u16 (1..4096) | ciphertext | tag[16]
// The AAD for the AEAD is the serialized prefix up to and including salt, followed by the
// canonical encryption context (encryption_context.h).
struct WrappedBlob {
  static constexpr uint8_t kVersion = 1;
  static constexpr size_t kMaxKeyIdLen = 64;
  static constexpr size_t kMaxCiphertextLen = 4096;
  static constexpr size_t kSaltLen = 16;
  static constexpr size_t kNonceLen = 12;
  static constexpr size_t kTagLen = 16;
  // magic 4 + version 1 + key_id_len 1 + key_version 4 + salt + nonce + ct_len 2 + tag.
  static constexpr size_t kFixedLen = 4 + 1 + 1 + 4 + kSaltLen + kNonceLen + 2 + kTagLen;  // 56
  static constexpr size_t kMinLen = kFixedLen + 1 + 1;                                     // 58
  static constexpr size_t kMaxLen = kFixedLen + kMaxKeyIdLen + kMaxCiphertextLen;          // 4216

  std::string key_id;
  uint32_t key_version = 0;
  std::array<uint8_t, kSaltLen> salt{};
  std::array<uint8_t, kNonceLen> nonce{};
  Bytes ciphertext;
  std::array<uint8_t, kTagLen> tag{};

  // The bytes authenticated as AAD prefix (magic..salt). Returns an empty vector if key_id or
  // key_version is invalid; such a blob can never be serialized, so nothing sealed with that
  // AAD can be stored (wrap must serialize, and fail, before returning anything).
  Bytes AadPrefix() const;

  friend bool operator==(const WrappedBlob&, const WrappedBlob&) = default;
};

// Strict parse: exact length, known version, bounds on every field. kCorrupt on any violation.
// Serialize(Parse(b)) == b for every accepted b: the layout has no free bits.
Result<WrappedBlob> ParseWrappedBlob(ByteSpan bytes);
// kInvalidArgument if a field is out of bounds.
Result<Bytes> SerializeWrappedBlob(const WrappedBlob& blob);
// Reads just key_id and key_version (for routing in keyd and for version reports); kCorrupt.
// It validates the whole blob first, so no routing decision is made on bytes Parse would reject.
Result<std::pair<std::string, uint32_t>> PeekWrappedBlobKey(ByteSpan bytes);

}  // namespace kmsfs::format
