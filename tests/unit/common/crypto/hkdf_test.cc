#include "common/crypto/hkdf.h"

#include <numeric>

#include "tests/catch.h"
#include "tests/unit/common/crypto/kat_util.h"

namespace kmsfs::crypto {
namespace {

using testing::Hex;

Bytes Range(uint8_t first, size_t n) {
  Bytes b(n);
  std::iota(b.begin(), b.end(), first);
  return b;
}

// RFC 5869, Appendix A, test cases 1-3 (the SHA-256 ones).
TEST_CASE("HKDF-SHA256 matches RFC 5869 test cases 1-3", "[crypto][hkdf][kat]") {
  SECTION("A.1 basic") {
    auto okm =
        Hkdf(Bytes(22, 0x0b), Hex("000102030405060708090a0b0c"), Hex("f0f1f2f3f4f5f6f7f8f9"), 42);
    REQUIRE(okm.ok());
    CHECK(HexEncode(okm->span()) ==
          "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  }
  SECTION("A.2 longer inputs and outputs") {
    auto okm = Hkdf(Range(0x00, 80), Range(0x60, 80), Range(0xb0, 80), 82);
    REQUIRE(okm.ok());
    CHECK(HexEncode(okm->span()) ==
          "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
          "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
          "cc30c58179ec3e87c14c01d5c1f3434f1d87");
  }
  SECTION("A.3 zero-length salt and info") {
    auto okm = Hkdf(Bytes(22, 0x0b), {}, {}, 42);
    REQUIRE(okm.ok());
    CHECK(HexEncode(okm->span()) ==
          "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
  }
}

TEST_CASE("HKDF separates domains and validates its arguments", "[crypto][hkdf]") {
  const Bytes ikm(32, 1), salt(16, 2);
  auto a = Hkdf(ikm, salt, AsBytes("kmsfs/v1/wrap"), 32);
  auto b = Hkdf(ikm, salt, AsBytes("kmsfs/v1/names"), 32);
  REQUIRE((a.ok() && b.ok()));
  CHECK_FALSE(ConstantTimeEqual(a->span(), b->span()));
  // A shorter output is a prefix of a longer one (HKDF-Expand's T(1) || T(2) ...).
  auto c = Hkdf(ikm, salt, AsBytes("kmsfs/v1/wrap"), 64);
  REQUIRE(c.ok());
  CHECK(ConstantTimeEqual(a->span(), c->span().first(32)));

  CHECK(Hkdf({}, salt, {}, 32).status().code() == Code::kInvalidArgument);
  CHECK(Hkdf(ikm, salt, {}, 0).status().code() == Code::kInvalidArgument);
  CHECK(Hkdf(ikm, salt, {}, kHkdfMaxOutputLen + 1).status().code() == Code::kInvalidArgument);
  CHECK(Hkdf(ikm, salt, Bytes(kHkdfMaxInfoLen + 1), 32).status().code() == Code::kInvalidArgument);
  auto max = Hkdf(ikm, salt, Bytes(kHkdfMaxInfoLen), kHkdfMaxOutputLen);
  REQUIRE(max.ok());
  CHECK(max->size() == kHkdfMaxOutputLen);
}

}  // namespace
}  // namespace kmsfs::crypto
