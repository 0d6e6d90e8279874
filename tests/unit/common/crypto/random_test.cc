#include "common/crypto/random.h"

#include <algorithm>
#include <set>

#include "common/base/bytes.h"
#include "tests/catch.h"

namespace kmsfs::crypto {
namespace {

// Statistical quality is OpenSSL's job (its DRBG is FIPS-validated upstream); these tests only
// catch wiring mistakes: an unfilled buffer, a constant, a repeated value.
TEST_CASE("RandomBytes fills every byte and does not repeat", "[crypto][random]") {
  std::set<Bytes> seen;
  for (int i = 0; i < 64; ++i) {
    Bytes b(32, 0);
    RandomBytes(b);
    CHECK(seen.insert(b).second);
  }
  // Over 64 KiB every byte value shows up (fails with probability ~ 256 * (255/256)^65536).
  Bytes big(1 << 16, 0);
  RandomBytes(big);
  std::set<uint8_t> values(big.begin(), big.end());
  CHECK(values.size() == 256);
  RandomBytes({});  // empty is a no-op
}

TEST_CASE("RandomArray, RandomSecret and RandomKey have the right sizes", "[crypto][random]") {
  auto a = RandomArray<12>();
  auto b = RandomArray<12>();
  CHECK(a != b);
  SecretBytes s = RandomSecret(48);
  CHECK(s.size() == 48);
  CHECK_FALSE(std::all_of(s.data(), s.data() + s.size(), [](uint8_t c) { return c == 0; }));
  Dek d1 = RandomKey<DekTag>();
  Dek d2 = RandomKey<DekTag>();
  CHECK(d1.span().size() == DekTag::kSize);
  CHECK_FALSE(d1 == d2);
}

}  // namespace
}  // namespace kmsfs::crypto
