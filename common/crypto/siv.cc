// AES-SIV (RFC 5297) over OpenSSL 3.0's "AES-{128,192,256}-SIV" provider ciphers.
//
// How OpenSSL's SIV is driven: each EVP_CipherUpdate with out == NULL is one S2V component
// (an AD string), the one with an output buffer is the plaintext (the last S2V input), Final
// completes the operation, and the 16-byte SIV is the AEAD "tag". On decryption the tag must be
// set first; the update that decrypts also verifies (CRYPTO_memcmp) and cleanses its output on
// mismatch.
//
// OpenSSL's SIV context cannot be re-armed for a new message without re-keying, so we keep one
// keyed template context (built in Create) and EVP_CIPHER_CTX_copy it per message; the copy is
// reset (its state cleansed) as soon as the message is done. Names are short and rare compared
// with file blocks, so the allocation per call is not worth avoiding.
#include "common/crypto/siv.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <utility>

#include "common/crypto/ossl_util.h"

namespace kmsfs::crypto {
namespace {

using internal::FitsInt;
using internal::FreeWith;
using internal::OpenSslError;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, FreeWith<&EVP_CIPHER_CTX_free>>;

constexpr int kEncrypt = 1;
constexpr int kDecrypt = 0;

// Fetched once per process (thread-safe static init); the reference is held for the process
// lifetime on purpose. nullptr if the default provider lacks SIV.
const EVP_CIPHER* SivCipherForKeyLen(size_t key_len) {
  static EVP_CIPHER* const k128 = EVP_CIPHER_fetch(nullptr, "AES-128-SIV", nullptr);
  static EVP_CIPHER* const k192 = EVP_CIPHER_fetch(nullptr, "AES-192-SIV", nullptr);
  static EVP_CIPHER* const k256 = EVP_CIPHER_fetch(nullptr, "AES-256-SIV", nullptr);
  switch (key_len) {
    case 32:
      return k128;
    case 48:
      return k192;
    case 64:
      return k256;
    default:
      return nullptr;
  }
}

// OpenSSL treats a NULL input pointer as "finalise"; an empty AD component must still be fed
// (it is an S2V input of its own), so give it a valid address.
const uint8_t* NonNull(ByteSpan s) {
  static const uint8_t kEmpty = 0;
  return s.data() != nullptr ? s.data() : &kEmpty;
}

Status CheckAad(const std::vector<ByteSpan>& aad) {
  if (aad.size() > Aes256Siv::kMaxAadComponents) {
    return Error(Code::kInvalidArgument, "too many AES-SIV associated-data components");
  }
  for (ByteSpan c : aad) {
    if (!FitsInt(c.size())) {
      return Error(Code::kInvalidArgument, "AES-SIV associated data too large");
    }
  }
  return Status::Ok();
}

// Feeds every AD component as its own S2V input.
bool FeedAad(EVP_CIPHER_CTX* ctx, const std::vector<ByteSpan>& aad) {
  for (ByteSpan c : aad) {
    int len = 0;
    if (EVP_CipherUpdate(ctx, nullptr, &len, NonNull(c), static_cast<int>(c.size())) != 1) {
      return false;
    }
  }
  return true;
}

}  // namespace

struct Aes256Siv::Impl {
  CipherCtxPtr keyed;  // keyed template; never used for a message directly
  CipherCtxPtr work;   // per-message copy of `keyed`, reset after each message
};

Aes256Siv::Aes256Siv(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Aes256Siv::~Aes256Siv() = default;  // EVP_CIPHER_CTX_free cleanses both contexts.
Aes256Siv::Aes256Siv(Aes256Siv&&) noexcept = default;
Aes256Siv& Aes256Siv::operator=(Aes256Siv&&) noexcept = default;

Result<Aes256Siv> Aes256Siv::Create(std::span<const uint8_t> key) {
  if (key.size() != kSivKeyLen) {
    return Error(Code::kInvalidArgument, "AES-256-SIV key must be 64 bytes");
  }
  return CreateWithKeySize(key);
}

Result<Aes256Siv> Aes256Siv::CreateForKnownAnswerTest(std::span<const uint8_t> key) {
  if (key.size() != 32 && key.size() != 48 && key.size() != 64) {
    return Error(Code::kInvalidArgument, "AES-SIV key must be 32, 48 or 64 bytes");
  }
  return CreateWithKeySize(key);
}

Result<Aes256Siv> Aes256Siv::CreateWithKeySize(std::span<const uint8_t> key) {
  const EVP_CIPHER* cipher = SivCipherForKeyLen(key.size());
  if (cipher == nullptr) return OpenSslError("EVP_CIPHER_fetch(AES-SIV)");
  CipherCtxPtr keyed(EVP_CIPHER_CTX_new());
  CipherCtxPtr work(EVP_CIPHER_CTX_new());
  if (!keyed || !work) return OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_CipherInit_ex(keyed.get(), cipher, nullptr, key.data(), nullptr, kEncrypt) != 1) {
    return OpenSslError("EVP_CipherInit_ex(AES-SIV)");
  }
  KMSFS_CHECK(EVP_CIPHER_CTX_get_key_length(keyed.get()) == static_cast<int>(key.size()));
  return Aes256Siv(std::make_unique<Impl>(Impl{std::move(keyed), std::move(work)}));
}

Result<Aes256Siv> Aes256Siv::Clone() const {
  KMSFS_CHECK(impl_ != nullptr);  // not moved-from
  CipherCtxPtr keyed(EVP_CIPHER_CTX_new());
  CipherCtxPtr work(EVP_CIPHER_CTX_new());
  if (!keyed || !work) return OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_CIPHER_CTX_copy(keyed.get(), impl_->keyed.get()) != 1) {
    return OpenSslError("EVP_CIPHER_CTX_copy");
  }
  return Aes256Siv(std::make_unique<Impl>(Impl{std::move(keyed), std::move(work)}));
}

Result<Bytes> Aes256Siv::Seal(const std::vector<ByteSpan>& aad, ByteSpan plaintext) {
  KMSFS_CHECK(impl_ != nullptr);
  if (plaintext.empty()) {
    return Error(Code::kInvalidArgument, "AES-SIV cannot seal an empty plaintext");
  }
  if (!FitsInt(plaintext.size())) {
    return Error(Code::kInvalidArgument, "AES-SIV plaintext too large");
  }
  KMSFS_RETURN_IF_ERROR(CheckAad(aad));

  EVP_CIPHER_CTX* ctx = impl_->work.get();
  // Per-message state is cleansed however we leave (EVP_CIPHER_CTX_reset frees the provider
  // context with OPENSSL_clear_free).
  struct ResetOnExit {
    EVP_CIPHER_CTX* c;
    ~ResetOnExit() { EVP_CIPHER_CTX_reset(c); }
  } reset{ctx};

  if (EVP_CIPHER_CTX_copy(ctx, impl_->keyed.get()) != 1) return OpenSslError("EVP_CIPHER_CTX_copy");
  if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, nullptr, kEncrypt) != 1) {
    return OpenSslError("EVP_CipherInit_ex(encrypt)");
  }
  if (!FeedAad(ctx, aad)) return OpenSslError("EVP_CipherUpdate(aad)");

  Bytes out(kSivTagLen + plaintext.size());
  int len = 0;
  if (EVP_CipherUpdate(ctx, out.data() + kSivTagLen, &len, plaintext.data(),
                       static_cast<int>(plaintext.size())) != 1 ||
      len != static_cast<int>(plaintext.size())) {
    return OpenSslError("EVP_CipherUpdate(plaintext)");
  }
  uint8_t final_block[16];
  int final_len = 0;
  if (EVP_CipherFinal_ex(ctx, final_block, &final_len) != 1 || final_len != 0) {
    return OpenSslError("EVP_CipherFinal_ex");
  }
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kSivTagLen), out.data()) !=
      1) {
    return OpenSslError("EVP_CTRL_AEAD_GET_TAG");
  }
  return out;
}

Result<Bytes> Aes256Siv::Open(const std::vector<ByteSpan>& aad, ByteSpan sealed) {
  KMSFS_CHECK(impl_ != nullptr);
  // Seal never produces an empty ciphertext, so 16 bytes or fewer cannot be genuine.
  if (sealed.size() <= kSivTagLen) return Error(Code::kCorrupt, "AES-SIV input too short");
  if (!FitsInt(sealed.size())) return Error(Code::kCorrupt, "AES-SIV input too large");
  KMSFS_RETURN_IF_ERROR(CheckAad(aad));
  const ByteSpan ciphertext = sealed.subspan(kSivTagLen);

  EVP_CIPHER_CTX* ctx = impl_->work.get();
  struct ResetOnExit {
    EVP_CIPHER_CTX* c;
    ~ResetOnExit() { EVP_CIPHER_CTX_reset(c); }
  } reset{ctx};

  if (EVP_CIPHER_CTX_copy(ctx, impl_->keyed.get()) != 1) return OpenSslError("EVP_CIPHER_CTX_copy");
  if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, nullptr, kDecrypt) != 1) {
    return OpenSslError("EVP_CipherInit_ex(decrypt)");
  }
  std::array<uint8_t, kSivTagLen> siv;
  std::copy(sealed.begin(), sealed.begin() + kSivTagLen, siv.begin());
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kSivTagLen), siv.data()) !=
      1) {
    return OpenSslError("EVP_CTRL_AEAD_SET_TAG");
  }
  if (!FeedAad(ctx, aad)) return OpenSslError("EVP_CipherUpdate(aad)");

  Bytes plaintext(ciphertext.size());
  int len = 0;
  uint8_t final_block[16];
  int final_len = 0;
  // The decrypting update verifies the SIV; Final reports the verdict again. Either failing
  // means the name does not authenticate. Wipe whatever CTR output exists before dropping it.
  const bool ok = EVP_CipherUpdate(ctx, plaintext.data(), &len, ciphertext.data(),
                                   static_cast<int>(ciphertext.size())) == 1 &&
                  len == static_cast<int>(ciphertext.size()) &&
                  EVP_CipherFinal_ex(ctx, final_block, &final_len) == 1 && final_len == 0;
  if (!ok) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    internal::ClearOpenSslErrors();
    return Error(Code::kCorrupt, "AES-SIV authentication failed");
  }
  return plaintext;
}

}  // namespace kmsfs::crypto
