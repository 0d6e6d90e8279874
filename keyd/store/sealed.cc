#include "keyd/store/sealed.h"

#include <array>
#include <cstring>

#include "common/crypto/aead.h"
#include "common/crypto/random.h"

namespace kmsfs::keyd {
namespace {

using crypto::kGcmNonceLen;
using crypto::kGcmTagLen;

constexpr std::string_view kMaterialAadPrefix = "kmsfs/v1/material";
constexpr std::string_view kVerifierAad = "kmsfs/v1/root-check";
// The verifier's plaintext. Knowing it helps no one: GCM's tag is what proves the key.
constexpr std::string_view kCanary = "kmsfs root key verifier canary 1";
static_assert(kCanary.size() == 32);

Bytes MaterialAad(std::string_view key_id, uint32_t version) {
  // Sized up front and filled in place (vector::insert here trips a GCC 12 -Warray-bounds false
  // positive).
  Bytes aad(kMaterialAadPrefix.size() + key_id.size() + 4);
  uint8_t* p = aad.data();
  std::memcpy(p, kMaterialAadPrefix.data(), kMaterialAadPrefix.size());
  p += kMaterialAadPrefix.size();
  std::memcpy(p, key_id.data(), key_id.size());
  PutU32(p + key_id.size(), version);
  return aad;
}

Result<Bytes> Seal(const crypto::RootKey& root, ByteSpan aad, ByteSpan plaintext) {
  KMSFS_ASSIGN_OR_RETURN(crypto::Aes256Gcm gcm, crypto::Aes256Gcm::Create(root.span()));
  Bytes out(kGcmNonceLen + plaintext.size() + kGcmTagLen);
  const std::span<uint8_t> all(out);
  crypto::RandomBytes(all.first(kGcmNonceLen));
  KMSFS_RETURN_IF_ERROR(gcm.Seal(all.first(kGcmNonceLen), aad, plaintext,
                                 all.subspan(kGcmNonceLen, plaintext.size()),
                                 all.last(kGcmTagLen)));
  return out;
}

// Opens `sealed` into `plaintext` (exactly sealed.size() - 28 bytes). kCorrupt on a bad tag.
Status Open(const crypto::RootKey& root, ByteSpan aad, ByteSpan sealed,
            std::span<uint8_t> plaintext) {
  if (sealed.size() != kGcmNonceLen + plaintext.size() + kGcmTagLen) {
    return Error(Code::kCorrupt, "sealed value has the wrong size");
  }
  KMSFS_ASSIGN_OR_RETURN(crypto::Aes256Gcm gcm, crypto::Aes256Gcm::Create(root.span()));
  return gcm.Open(sealed.first(kGcmNonceLen), aad, sealed.subspan(kGcmNonceLen, plaintext.size()),
                  sealed.last(kGcmTagLen), plaintext);
}

}  // namespace

Result<Bytes> SealMaterial(const crypto::RootKey& root, std::string_view key_id, uint32_t version,
                           const crypto::MasterKey& material) {
  const Bytes aad = MaterialAad(key_id, version);
  return Seal(root, aad, material.span());
}

Result<crypto::MasterKey> UnsealMaterial(const crypto::RootKey& root, std::string_view key_id,
                                         uint32_t version, ByteSpan sealed) {
  const Bytes aad = MaterialAad(key_id, version);
  crypto::MasterKey key;  // locked memory; the plaintext never touches an ordinary buffer
  Status s = Open(root, aad, sealed, key.mutable_span());
  if (!s.ok()) {
    return Error(Code::kCorrupt, "sealed material of key " + std::string(key_id) + " version " +
                                     std::to_string(version) +
                                     " does not authenticate under the root key (" +
                                     s.error().message() + ")");
  }
  return key;
}

Result<Bytes> SealVerifier(const crypto::RootKey& root) {
  return Seal(root, AsBytes(kVerifierAad), AsBytes(kCanary));
}

Status CheckVerifier(const crypto::RootKey& root, ByteSpan sealed) {
  if (sealed.size() != kSealedVerifierSize) {
    return Error(Code::kCorrupt, "root key verifier has the wrong size");
  }
  std::array<uint8_t, kCanary.size()> out{};
  Status s = Open(root, AsBytes(kVerifierAad), sealed, out);
  if (!s.ok()) {
    if (s.code() != Code::kCorrupt) return s;
    return Error(Code::kPermissionDenied,
                 "the root key verifier does not open under this root key");
  }
  if (!crypto::ConstantTimeEqual(out, AsBytes(kCanary))) {
    return Error(Code::kPermissionDenied, "the root key verifier does not match");
  }
  return Status::Ok();
}

}  // namespace kmsfs::keyd
