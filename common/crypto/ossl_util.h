// Internal to common/crypto: RAII deleters and error translation for OpenSSL calls.
// This header names no OpenSSL type, so it can sit beside the public headers; only the .cc files
// of this directory include <openssl/*.h> (STYLE.md §2, scripts/check-deps.sh).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>

#include "common/base/status.h"

namespace kmsfs::crypto::internal {

// unique_ptr deleter that calls an OpenSSL free function, e.g.
//   std::unique_ptr<EVP_CIPHER_CTX, FreeWith<&EVP_CIPHER_CTX_free>>
// OpenSSL's *_free functions cleanse the key material they hold (contexts are
// OPENSSL_clear_free'd).
template <auto kFreeFn>
struct FreeWith {
  template <class T>
  void operator()(T* p) const noexcept {
    if (p != nullptr) kFreeFn(p);
  }
};

// A kInternal error naming the failed call, with OpenSSL's reason string for the first queued
// error (reason strings are static text, never key bytes). Drains this thread's error queue so a
// stale entry cannot be misattributed to a later, unrelated call.
Error OpenSslError(std::string_view what);

// Empties this thread's OpenSSL error queue (e.g. after an expected failure such as a bad tag).
void ClearOpenSslErrors();

// OpenSSL's EVP update functions take int lengths.
inline bool FitsInt(size_t n) { return n <= static_cast<size_t>(std::numeric_limits<int>::max()); }

// True if the two ranges overlap without being identical (in-place is fine, shifted is not).
inline bool PartiallyOverlap(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.empty() || b.empty() || a.data() == b.data()) return false;
  const auto pa = reinterpret_cast<uintptr_t>(a.data());
  const auto pb = reinterpret_cast<uintptr_t>(b.data());
  return pa < pb + b.size() && pb < pa + a.size();
}

}  // namespace kmsfs::crypto::internal
