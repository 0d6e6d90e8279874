// AES-256-GCM over OpenSSL's EVP interface.
//
// Performance: the key schedule (and GHASH key) is computed once in Create() and lives in the
// EVP_CIPHER_CTX. Each Seal/Open only re-initialises the IV with EVP_CipherInit_ex(ctx, NULL
// cipher, NULL key, iv, enc), which in OpenSSL 3.0's provider just buffers the 12-byte IV: no
// allocation and no key expansion on the hot path.
//
// Security: Open never releases unverified plaintext. OpenSSL's GCM decrypts before it can check
// the tag, so a failed EVP_DecryptFinal_ex leaves plaintext-shaped bytes in the output; we wipe
// them (OPENSSL_cleanse) before returning kCorrupt.
#include "common/crypto/aead.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <memory>
#include <utility>

#include "common/crypto/ossl_util.h"

namespace kmsfs::crypto {
namespace {

using internal::FitsInt;
using internal::FreeWith;
using internal::OpenSslError;
using internal::PartiallyOverlap;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, FreeWith<&EVP_CIPHER_CTX_free>>;

constexpr int kEncrypt = 1;
constexpr int kDecrypt = 0;

void WipeSpan(std::span<uint8_t> s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
}

// The size and aliasing rules shared by Seal and Open. Messages name the field, never its bytes.
Status CheckArgs(std::span<const uint8_t> nonce, std::span<const uint8_t> aad,
                 std::span<const uint8_t> in, std::span<const uint8_t> out, size_t tag_size) {
  if (nonce.size() != kGcmNonceLen) {
    return Error(Code::kInvalidArgument, "GCM nonce must be 12 bytes");
  }
  if (tag_size != kGcmTagLen) return Error(Code::kInvalidArgument, "GCM tag must be 16 bytes");
  if (in.size() != out.size()) {
    return Error(Code::kInvalidArgument, "GCM input and output sizes differ");
  }
  if (!FitsInt(in.size()) || !FitsInt(aad.size())) {
    return Error(Code::kInvalidArgument, "GCM input too large");
  }
  if (PartiallyOverlap(in, out)) {
    return Error(Code::kInvalidArgument, "GCM input and output overlap partially");
  }
  return Status::Ok();
}

}  // namespace

struct Aes256Gcm::Impl {
  CipherCtxPtr ctx;
};

Aes256Gcm::Aes256Gcm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Aes256Gcm::~Aes256Gcm() = default;  // EVP_CIPHER_CTX_free cleanses the key schedule.
Aes256Gcm::Aes256Gcm(Aes256Gcm&&) noexcept = default;
Aes256Gcm& Aes256Gcm::operator=(Aes256Gcm&&) noexcept = default;

Result<Aes256Gcm> Aes256Gcm::Create(std::span<const uint8_t> key) {
  if (key.size() != kGcmKeyLen) {
    return Error(Code::kInvalidArgument, "AES-256-GCM key must be 32 bytes");
  }
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslError("EVP_CIPHER_CTX_new");
  // IV is left unset here; every Seal/Open supplies its own.
  if (EVP_CipherInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nullptr, kEncrypt) !=
      1) {
    return OpenSslError("EVP_CipherInit_ex(AES-256-GCM)");
  }
  // 12 bytes is GCM's default IV length; the fast path (no GHASH over the IV) depends on it.
  KMSFS_CHECK(EVP_CIPHER_CTX_get_iv_length(ctx.get()) == static_cast<int>(kGcmNonceLen));
  return Aes256Gcm(std::make_unique<Impl>(Impl{std::move(ctx)}));
}

Result<Aes256Gcm> Aes256Gcm::Clone() const {
  KMSFS_CHECK(impl_ != nullptr);  // not moved-from
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_CIPHER_CTX_copy(ctx.get(), impl_->ctx.get()) != 1) {
    return OpenSslError("EVP_CIPHER_CTX_copy");
  }
  return Aes256Gcm(std::make_unique<Impl>(Impl{std::move(ctx)}));
}

Status Aes256Gcm::Seal(std::span<const uint8_t> nonce, std::span<const uint8_t> aad,
                       std::span<const uint8_t> plaintext, std::span<uint8_t> ciphertext,
                       std::span<uint8_t> tag) {
  KMSFS_CHECK(impl_ != nullptr);
  KMSFS_RETURN_IF_ERROR(CheckArgs(nonce, aad, plaintext, ciphertext, tag.size()));
  EVP_CIPHER_CTX* ctx = impl_->ctx.get();
  // On any failure below, leave no half-sealed output behind.
  auto fail = [&](const char* what) -> Status {
    WipeSpan(ciphertext);
    WipeSpan(tag);
    return OpenSslError(what);
  };

  if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data(), kEncrypt) != 1) {
    return fail("EVP_CipherInit_ex(nonce)");
  }
  int len = 0;
  if (!aad.empty() &&
      (EVP_CipherUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
       len != static_cast<int>(aad.size()))) {
    return fail("EVP_CipherUpdate(aad)");
  }
  if (!plaintext.empty() && (EVP_CipherUpdate(ctx, ciphertext.data(), &len, plaintext.data(),
                                              static_cast<int>(plaintext.size())) != 1 ||
                             len != static_cast<int>(plaintext.size()))) {
    return fail("EVP_CipherUpdate(plaintext)");
  }
  // GCM is a stream mode: Final writes nothing, but give it a valid pointer anyway.
  uint8_t final_block[16];
  int final_len = 0;
  if (EVP_CipherFinal_ex(ctx, final_block, &final_len) != 1 || final_len != 0) {
    return fail("EVP_CipherFinal_ex");
  }
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kGcmTagLen), tag.data()) !=
      1) {
    return fail("EVP_CTRL_AEAD_GET_TAG");
  }
  return Status::Ok();
}

Status Aes256Gcm::Open(std::span<const uint8_t> nonce, std::span<const uint8_t> aad,
                       std::span<const uint8_t> ciphertext, std::span<const uint8_t> tag,
                       std::span<uint8_t> plaintext) {
  KMSFS_CHECK(impl_ != nullptr);
  KMSFS_RETURN_IF_ERROR(CheckArgs(nonce, aad, ciphertext, plaintext, tag.size()));
  EVP_CIPHER_CTX* ctx = impl_->ctx.get();
  auto fail = [&](const char* what) -> Status {
    WipeSpan(plaintext);
    return OpenSslError(what);
  };

  if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data(), kDecrypt) != 1) {
    return fail("EVP_CipherInit_ex(nonce)");
  }
  // The ctrl takes a non-const pointer; hand it a copy rather than casting away const.
  std::array<uint8_t, kGcmTagLen> expected_tag;
  std::copy(tag.begin(), tag.end(), expected_tag.begin());
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kGcmTagLen),
                          expected_tag.data()) != 1) {
    return fail("EVP_CTRL_AEAD_SET_TAG");
  }
  int len = 0;
  if (!aad.empty() &&
      (EVP_CipherUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
       len != static_cast<int>(aad.size()))) {
    return fail("EVP_CipherUpdate(aad)");
  }
  if (!ciphertext.empty() && (EVP_CipherUpdate(ctx, plaintext.data(), &len, ciphertext.data(),
                                               static_cast<int>(ciphertext.size())) != 1 ||
                              len != static_cast<int>(ciphertext.size()))) {
    return fail("EVP_CipherUpdate(ciphertext)");
  }
  uint8_t final_block[16];
  int final_len = 0;
  // The tag comparison happens here (constant-time inside OpenSSL: CRYPTO_memcmp).
  if (EVP_CipherFinal_ex(ctx, final_block, &final_len) != 1 || final_len != 0) {
    WipeSpan(plaintext);
    internal::ClearOpenSslErrors();
    return Error(Code::kCorrupt, "AES-GCM authentication failed");
  }
  return Status::Ok();
}

}  // namespace kmsfs::crypto
