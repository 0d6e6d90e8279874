// WrapKey/UnwrapKey: seal a data key under a master key version, bound to an encryption context.
#pragma once

#include <cstdint>
#include <string>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"
#include "common/format/encryption_context.h"
#include "common/format/wrapped_blob.h"

namespace kmsfs::crypto {

// Construction, v1 (specified in docs/format.md, "Wrapped blob"):
//   salt     = 16 random bytes, nonce = 12 random bytes (both stored in the blob)
//   wrap_key = HKDF-SHA256(ikm = master key version material, salt = salt, info = "kmsfs/v1/wrap",
//                          L = 32)
//   aad      = blob.AadPrefix()              // magic | version | key id | key version | salt
//              || CanonicalContext(ctx)     // the encryption context, canonical form
//   ciphertext, tag = AES-256-GCM(wrap_key, nonce, aad, plaintext)
// Why a per-wrap key: every wrap under one master key version uses a fresh HKDF salt, so each
// GCM key seals exactly one message and the 2^32 random-nonce limit per GCM key (NIST SP 800-38D
// §8.3) never applies to the master key, however many DEKs it wraps. Why this AAD: a blob
// names its key id and version in clear (keyd routes on them) and is bound to {volume, file}
// through the context, so editing the header or moving the blob to another file or volume fails
// authentication. The derived key is wiped as soon as the GCM context is keyed.
inline constexpr char kWrapHkdfInfo[] = "kmsfs/v1/wrap";

// Returns the serialized format::WrappedBlob. `material` is the master key version's secret;
// `key_id`/`key_version` are the names the blob will carry. kInvalidArgument if the plaintext is
// empty or longer than WrappedBlob::kMaxCiphertextLen, the key id or version is out of the
// format's bounds, or the context is not canonicalisable; kInternal if OpenSSL fails.
// Thread-safe.
Result<Bytes> WrapKey(const MasterKey& material, std::string key_id, uint32_t key_version,
                      const format::EncryptionContext& ctx, ByteSpan plaintext);

// Recovers the wrapped plaintext into locked memory. kCorrupt if the blob does not authenticate
// under `material` and `ctx` (wrong master key or version, different encryption context, or any
// modified byte); the message names no key bytes and no plaintext. kInvalidArgument if `ctx` is
// not canonicalisable. Thread-safe.
Result<SecretBytes> UnwrapKey(const MasterKey& material, const format::WrappedBlob& blob,
                              const format::EncryptionContext& ctx);
// Parses `serialized` (kCorrupt on any format violation), then unwraps as above.
Result<SecretBytes> UnwrapKey(const MasterKey& material, ByteSpan serialized,
                              const format::EncryptionContext& ctx);

}  // namespace kmsfs::crypto
