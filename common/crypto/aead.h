// Aes256Gcm: AES-256-GCM seal/open with a reusable cipher context (no allocation per call).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/base/status.h"

namespace kmsfs::crypto {

inline constexpr size_t kGcmKeyLen = 32;
inline constexpr size_t kGcmNonceLen = 12;
inline constexpr size_t kGcmTagLen = 16;

// One key, one context. Not thread-safe: use one instance per thread (they are cheap to Clone()).
// The key schedule is held by OpenSSL's context and wiped when the object is destroyed.
class Aes256Gcm {
 public:
  // kInvalidArgument unless key.size() == 32.
  static Result<Aes256Gcm> Create(std::span<const uint8_t> key);
  ~Aes256Gcm();
  Aes256Gcm(Aes256Gcm&&) noexcept;
  Aes256Gcm& operator=(Aes256Gcm&&) noexcept;
  Aes256Gcm(const Aes256Gcm&) = delete;
  Aes256Gcm& operator=(const Aes256Gcm&) = delete;
  // A second context with the same key, for another thread.
  Result<Aes256Gcm> Clone() const;

  // ciphertext.size() must equal plaintext.size() (may alias exactly); nonce 12 bytes; tag 16.
  // `aad` may be empty. kInvalidArgument on size mismatch, kInternal if OpenSSL fails.
  Status Seal(std::span<const uint8_t> nonce, std::span<const uint8_t> aad,
              std::span<const uint8_t> plaintext, std::span<uint8_t> ciphertext,
              std::span<uint8_t> tag);
  // kCorrupt if the tag does not verify; `plaintext` is then zeroed (never partial output).
  Status Open(std::span<const uint8_t> nonce, std::span<const uint8_t> aad,
              std::span<const uint8_t> ciphertext, std::span<const uint8_t> tag,
              std::span<uint8_t> plaintext);

 private:
  struct Impl;
  explicit Aes256Gcm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kmsfs::crypto
