#include "common/crypto/kdf.h"

#include "tests/catch.h"
#include "tests/unit/common/crypto/kat_util.h"

namespace kmsfs::crypto {
namespace {

// RFC 7914 §12 (test vectors for scrypt), the three that stay under 16 MiB.
TEST_CASE("scrypt matches RFC 7914", "[crypto][kdf][kat]") {
  SECTION("P=\"\", S=\"\", N=16, r=1, p=1") {
    auto dk = Scrypt({}, {}, ScryptParams{16, 1, 1}, 64);
    REQUIRE(dk.ok());
    CHECK(HexEncode(dk->span()) ==
          "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
          "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906");
  }
  SECTION("P=\"password\", S=\"NaCl\", N=1024, r=8, p=16") {
    auto dk = Scrypt(AsBytes("password"), AsBytes("NaCl"), ScryptParams{1024, 8, 16}, 64);
    REQUIRE(dk.ok());
    CHECK(HexEncode(dk->span()) ==
          "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
          "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640");
  }
  SECTION("P=\"pleaseletmein\", S=\"SodiumChloride\", N=16384, r=8, p=1") {
    auto dk =
        Scrypt(AsBytes("pleaseletmein"), AsBytes("SodiumChloride"), ScryptParams{16384, 8, 1}, 64);
    REQUIRE(dk.ok());
    CHECK(HexEncode(dk->span()) ==
          "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
          "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887");
  }
}

TEST_CASE("scrypt defaults stay within the documented budget", "[crypto][kdf]") {
  const ScryptParams defaults;
  CHECK(defaults.n == (uint64_t{1} << 17));
  CHECK(defaults.r == 8);
  CHECK(defaults.p == 1);
  CHECK(ScryptMemoryBytes(defaults) <= (uint64_t{256} << 20));
  // And OpenSSL accepts them as they are (this is the one slow test here: ~0.3 s).
  auto dk = Scrypt(AsBytes("correct horse battery staple"), Bytes(16, 0x5c), defaults, 32);
  REQUIRE(dk.ok());
  CHECK(dk->size() == 32);
}

TEST_CASE("scrypt rejects unsafe or malformed parameters", "[crypto][kdf]") {
  const Bytes salt(16, 1);
  auto code = [&](ScryptParams p, size_t len = 32) {
    return Scrypt(AsBytes("pw"), salt, p, len).status().code();
  };
  CHECK(code({0, 8, 1}) == Code::kInvalidArgument);
  CHECK(code({1, 8, 1}) == Code::kInvalidArgument);
  CHECK(code({1000, 8, 1}) == Code::kInvalidArgument);  // not a power of two
  CHECK(code({1024, 0, 1}) == Code::kInvalidArgument);
  CHECK(code({1024, 8, 0}) == Code::kInvalidArgument);
  CHECK(code({1024, 1u << 15, 1u << 15}) == Code::kInvalidArgument);  // r * p >= 2^30
  CHECK(code({uint64_t{1} << 17, 1, 1}) == Code::kInvalidArgument);   // N >= 2^(16 r)
  // A hostile header asking for 2 GiB must not make us allocate it.
  CHECK(code({uint64_t{1} << 21, 8, 1}) == Code::kInvalidArgument);
  CHECK(code({uint64_t{1} << 62, 8, 1}) == Code::kInvalidArgument);
  CHECK(code({1024, 8, 1}, 0) == Code::kInvalidArgument);
  CHECK(code({1024, 8, 1}, 1025) == Code::kInvalidArgument);
  CHECK(ScryptMemoryBytes({uint64_t{1} << 63, 1u << 31, 1}) == UINT64_MAX);

  // Different salts, different keys.
  auto a = Scrypt(AsBytes("pw"), Bytes(16, 1), {1024, 8, 1}, 32);
  auto b = Scrypt(AsBytes("pw"), Bytes(16, 2), {1024, 8, 1}, 32);
  REQUIRE((a.ok() && b.ok()));
  CHECK_FALSE(ConstantTimeEqual(a->span(), b->span()));
}

}  // namespace
}  // namespace kmsfs::crypto
