#include "common/crypto/random.h"

#include <openssl/rand.h>

#include <algorithm>
#include <climits>

#include "common/base/check.h"

namespace kmsfs::crypto {

void RandomBytes(std::span<uint8_t> out) {
  // RAND_bytes takes an int length; chunk so that any span size is handled.
  while (!out.empty()) {
    const size_t chunk = std::min<size_t>(out.size(), INT_MAX);
    KMSFS_CHECK(RAND_bytes(out.data(), static_cast<int>(chunk)) == 1);
    out = out.subspan(chunk);
  }
}

SecretBytes RandomSecret(size_t size) {
  SecretBytes s(size);
  RandomBytes(s.mutable_span());
  return s;
}

}  // namespace kmsfs::crypto
