// Sealing under the root key: master key material and the root-key verifier, AES-256-GCM.
//
// A sealed value is nonce(12) || ciphertext || tag(16), with a fresh random nonce per seal (the
// number of seals under one root key is tiny next to the 2^32 random-nonce bound). The AAD binds
// each sealed value to its place, so a sealed blob copied to another key or version, or offered as
// the verifier, does not open:
//   material: "kmsfs/v1/material" || key id (36 bytes, fixed length) || u32 big-endian version
//   verifier: "kmsfs/v1/root-check"  (plaintext: a known 32-byte canary)
// Thread-safe (each call builds its own cipher context; the key schedule is microseconds).
#pragma once

#include <cstdint>
#include <string_view>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"

namespace kmsfs::keyd {

inline constexpr size_t kSealedMaterialSize = 12 + 32 + 16;
inline constexpr size_t kSealedVerifierSize = 12 + 32 + 16;

Result<Bytes> SealMaterial(const crypto::RootKey& root, std::string_view key_id, uint32_t version,
                           const crypto::MasterKey& material);
// Decrypts straight into locked memory. kCorrupt if `sealed` is malformed or does not
// authenticate (tampered, moved to another key/version, or sealed under another root key).
Result<crypto::MasterKey> UnsealMaterial(const crypto::RootKey& root, std::string_view key_id,
                                         uint32_t version, ByteSpan sealed);

Result<Bytes> SealVerifier(const crypto::RootKey& root);
// OK iff `sealed` opens under `root` to the canary. kPermissionDenied if it does not open (the
// usual cause: another root key); kCorrupt if it is not even the right size.
Status CheckVerifier(const crypto::RootKey& root, ByteSpan sealed);

}  // namespace kmsfs::keyd
