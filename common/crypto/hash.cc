// SHA-256 via EVP_MD "SHA256", HMAC via EVP_MAC "HMAC"; both algorithms fetched once.
#include "common/crypto/hash.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <utility>

#include "common/base/check.h"
#include "common/crypto/ossl_util.h"

namespace kmsfs::crypto {
namespace {

using internal::FreeWith;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, FreeWith<&EVP_MD_CTX_free>>;
using MacCtxPtr = std::unique_ptr<EVP_MAC_CTX, FreeWith<&EVP_MAC_CTX_free>>;

const EVP_MD* Sha256Md() {
  static EVP_MD* const kMd = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  KMSFS_CHECK(kMd != nullptr);
  return kMd;
}

EVP_MAC* HmacAlgorithm() {
  static EVP_MAC* const kMac = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr);
  KMSFS_CHECK(kMac != nullptr);
  return kMac;
}

}  // namespace

struct Sha256Hasher::Impl {
  MdCtxPtr ctx;
};

Sha256Hasher::Sha256Hasher() : impl_(std::make_unique<Impl>(Impl{MdCtxPtr(EVP_MD_CTX_new())})) {
  KMSFS_CHECK(impl_->ctx != nullptr);
  KMSFS_CHECK(EVP_DigestInit_ex(impl_->ctx.get(), Sha256Md(), nullptr) == 1);
}
Sha256Hasher::~Sha256Hasher() = default;
Sha256Hasher::Sha256Hasher(Sha256Hasher&&) noexcept = default;
Sha256Hasher& Sha256Hasher::operator=(Sha256Hasher&&) noexcept = default;

void Sha256Hasher::Update(ByteSpan data) {
  KMSFS_CHECK(impl_ != nullptr);  // not moved-from
  if (data.empty()) return;
  KMSFS_CHECK(EVP_DigestUpdate(impl_->ctx.get(), data.data(), data.size()) == 1);
}

Sha256Digest Sha256Hasher::Finish() {
  KMSFS_CHECK(impl_ != nullptr);
  Sha256Digest out;
  unsigned int len = 0;
  KMSFS_CHECK(EVP_DigestFinal_ex(impl_->ctx.get(), out.data(), &len) == 1);
  KMSFS_CHECK(len == kSha256Len);
  KMSFS_CHECK(EVP_DigestInit_ex(impl_->ctx.get(), Sha256Md(), nullptr) == 1);
  return out;
}

Sha256Digest HmacSha256(ByteSpan key, ByteSpan data) {
  MacCtxPtr ctx(EVP_MAC_CTX_new(HmacAlgorithm()));
  KMSFS_CHECK(ctx != nullptr);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  // A NULL key means "reuse the previous key" to EVP_MAC_init; an empty key is a valid HMAC key,
  // so pass a real (zero-length) buffer.
  static const uint8_t kEmptyKey = 0;
  const uint8_t* key_ptr = key.data() != nullptr ? key.data() : &kEmptyKey;
  KMSFS_CHECK(EVP_MAC_init(ctx.get(), key_ptr, key.size(), params) == 1);
  if (!data.empty()) KMSFS_CHECK(EVP_MAC_update(ctx.get(), data.data(), data.size()) == 1);
  Sha256Digest out;
  size_t len = 0;
  KMSFS_CHECK(EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) == 1);
  KMSFS_CHECK(len == kSha256Len);
  return out;  // ctx (holding the keyed HMAC state) is cleansed by EVP_MAC_CTX_free
}

}  // namespace kmsfs::crypto
