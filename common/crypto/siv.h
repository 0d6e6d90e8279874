// Aes256Siv: deterministic authenticated encryption (AES-SIV, RFC 5297) for file names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/status.h"

namespace kmsfs::crypto {

inline constexpr size_t kSivKeyLen = 64;  // two AES-256 keys: K1 for S2V/CMAC, K2 for CTR
inline constexpr size_t kSivTagLen = 16;  // the synthetic IV, prepended to the ciphertext

// AES-SIV is deterministic: equal (key, AAD components, plaintext) give equal output, which is
// what a file-name cipher needs (lookups by name) and all it leaks. Each AAD component is a
// separate S2V input (RFC 5297 §2.4), so {"a","bc"} and {"ab","c"} authenticate differently; the
// name codec passes the per-directory tweak as one. Built on OpenSSL 3.0's "AES-256-SIV".
//
// Not thread-safe: one instance per thread (Clone is cheap). The keyed OpenSSL context is wiped
// when the object is destroyed.
class Aes256Siv {
 public:
  // kInvalidArgument unless key.size() == 64.
  static Result<Aes256Siv> Create(std::span<const uint8_t> key);
  // Known-answer tests only: also accepts 32- and 48-byte keys (AES-128-SIV, AES-192-SIV), since
  // RFC 5297's published vectors use 256-bit SIV keys. Production code uses Create().
  static Result<Aes256Siv> CreateForKnownAnswerTest(std::span<const uint8_t> key);
  ~Aes256Siv();
  Aes256Siv(Aes256Siv&&) noexcept;
  Aes256Siv& operator=(Aes256Siv&&) noexcept;
  Aes256Siv(const Aes256Siv&) = delete;
  Aes256Siv& operator=(const Aes256Siv&) = delete;
  Result<Aes256Siv> Clone() const;

  // Returns SIV tag (16 bytes) || ciphertext. At most kMaxAadComponents components.
  // kInvalidArgument for an empty plaintext: OpenSSL 3.0's SIV cannot seal one (openssl#17268),
  // and a file name is never empty.
  Result<Bytes> Seal(const std::vector<ByteSpan>& aad, ByteSpan plaintext);
  // Inverse of Seal with the same AAD components. kCorrupt if `sealed` is shorter than 17 bytes
  // or does not authenticate; no plaintext is ever returned in that case.
  Result<Bytes> Open(const std::vector<ByteSpan>& aad, ByteSpan sealed);

  // RFC 5297 allows up to 126 AD components; we need two or three.
  static constexpr size_t kMaxAadComponents = 126;

 private:
  struct Impl;
  explicit Aes256Siv(std::unique_ptr<Impl> impl);
  static Result<Aes256Siv> CreateWithKeySize(std::span<const uint8_t> key);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kmsfs::crypto
