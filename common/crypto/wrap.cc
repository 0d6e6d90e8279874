#include "common/crypto/wrap.h"

#include <array>
#include <utility>

#include "common/crypto/aead.h"
#include "common/crypto/hkdf.h"
#include "common/crypto/random.h"

namespace kmsfs::crypto {
namespace {

using format::WrappedBlob;

// Derives the per-wrap key and keys a GCM context with it. The derived key lives only inside
// this function: SecretBytes wipes it on return, and from then on only OpenSSL's context (wiped
// when the Aes256Gcm is destroyed) holds the schedule.
Result<Aes256Gcm> WrapCipher(const MasterKey& material,
                             const std::array<uint8_t, WrappedBlob::kSaltLen>& salt) {
  KMSFS_ASSIGN_OR_RETURN(SecretBytes wrap_key,
                         Hkdf(material.span(), salt, AsBytes(kWrapHkdfInfo), kGcmKeyLen));
  return Aes256Gcm::Create(wrap_key.span());
}

// aad = AadPrefix(blob) || CanonicalContext(ctx); see wrap.h. AadPrefix is empty when the key
// id or version is out of bounds; that is reported as `bad_name` (kInvalidArgument when wrapping,
// kCorrupt when unwrapping) rather than sealed or opened under a truncated AAD.
Result<Bytes> WrapAad(const WrappedBlob& blob, const format::EncryptionContext& ctx,
                      Code bad_name) {
  Bytes aad = blob.AadPrefix();
  if (aad.empty()) return Error(bad_name, "wrapped blob key id or key version out of range");
  KMSFS_ASSIGN_OR_RETURN(Bytes canonical, format::CanonicalContext(ctx));
  aad.insert(aad.end(), canonical.begin(), canonical.end());
  return aad;
}

}  // namespace

Result<Bytes> WrapKey(const MasterKey& material, std::string key_id, uint32_t key_version,
                      const format::EncryptionContext& ctx, ByteSpan plaintext) {
  if (plaintext.empty() || plaintext.size() > WrappedBlob::kMaxCiphertextLen) {
    return Error(Code::kInvalidArgument, "wrapped key length out of range");
  }
  WrappedBlob blob;
  blob.key_id = std::move(key_id);
  blob.key_version = key_version;
  blob.salt = RandomArray<WrappedBlob::kSaltLen>();
  blob.nonce = RandomArray<WrappedBlob::kNonceLen>();
  KMSFS_ASSIGN_OR_RETURN(Bytes aad, WrapAad(blob, ctx, Code::kInvalidArgument));
  KMSFS_ASSIGN_OR_RETURN(Aes256Gcm gcm, WrapCipher(material, blob.salt));
  blob.ciphertext.resize(plaintext.size());
  KMSFS_RETURN_IF_ERROR(gcm.Seal(blob.nonce, aad, plaintext, blob.ciphertext, blob.tag));
  // Serialize re-checks the key id and version bounds (kInvalidArgument), so a bad name is
  // reported before anything is returned.
  return format::SerializeWrappedBlob(blob);
}

Result<SecretBytes> UnwrapKey(const MasterKey& material, const WrappedBlob& blob,
                              const format::EncryptionContext& ctx) {
  if (blob.ciphertext.empty() || blob.ciphertext.size() > WrappedBlob::kMaxCiphertextLen) {
    return Error(Code::kCorrupt, "wrapped key length out of range");
  }
  KMSFS_ASSIGN_OR_RETURN(Bytes aad, WrapAad(blob, ctx, Code::kCorrupt));
  KMSFS_ASSIGN_OR_RETURN(Aes256Gcm gcm, WrapCipher(material, blob.salt));
  SecretBytes plaintext(blob.ciphertext.size());
  Status s = gcm.Open(blob.nonce, aad, blob.ciphertext, blob.tag, plaintext.mutable_span());
  if (!s.ok()) {
    if (s.code() == Code::kCorrupt) {
      // One message for every cause, so the error reveals nothing about which input was wrong.
      return Error(Code::kCorrupt,
                   "wrapped key does not authenticate (wrong master key or version, different "
                   "encryption context, or modified blob)");
    }
    return s.error();
  }
  return plaintext;
}

Result<SecretBytes> UnwrapKey(const MasterKey& material, ByteSpan serialized,
                              const format::EncryptionContext& ctx) {
  KMSFS_ASSIGN_OR_RETURN(WrappedBlob blob, format::ParseWrappedBlob(serialized));
  return UnwrapKey(material, blob, ctx);
}

}  // namespace kmsfs::crypto
