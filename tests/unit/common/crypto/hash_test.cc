#include "common/crypto/hash.h"

#include <string>

#include "common/crypto/secret.h"
#include "tests/catch.h"
#include "tests/unit/common/crypto/kat_util.h"

namespace kmsfs::crypto {
namespace {

using testing::Hex;

std::string HexOf(const Sha256Digest& d) { return HexEncode(d); }

// FIPS 180-2, Appendix B (SHA-256 examples) and the empty message.
TEST_CASE("SHA-256 matches the FIPS 180-2 examples", "[crypto][hash][kat]") {
  CHECK(HexOf(Sha256(AsBytes("abc"))) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(HexOf(Sha256(AsBytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(HexOf(Sha256(ByteSpan())) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  // B.3: one million 'a'.
  const std::string million(1000000, 'a');
  CHECK(HexOf(Sha256(AsBytes(million))) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("SHA-256 is the same however the input is split", "[crypto][hash]") {
  const std::string msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  const Sha256Digest whole = Sha256(AsBytes(msg));
  for (size_t cut = 0; cut <= msg.size(); ++cut) {
    CHECK(Sha256(AsBytes(msg.substr(0, cut)), AsBytes(msg.substr(cut))) == whole);
  }
  Sha256Hasher h;
  for (char c : msg) h.Update(AsBytes(std::string_view(&c, 1)));
  CHECK(h.Finish() == whole);
  // Finish starts over: the hasher is reusable.
  h.Update(AsBytes("abc"));
  CHECK(HexOf(h.Finish()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256Hasher moved = std::move(h);
  moved.Update(AsBytes("abc"));
  CHECK(moved.Finish() == Sha256(AsBytes("abc")));
}

// RFC 4231, HMAC-SHA-256 outputs of test cases 1, 2, 4, 6 and 7.
TEST_CASE("HMAC-SHA256 matches RFC 4231", "[crypto][hash][kat]") {
  CHECK(HexOf(HmacSha256(Bytes(20, 0x0b), AsBytes("Hi There"))) ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  CHECK(HexOf(HmacSha256(AsBytes("Jefe"), AsBytes("what do ya want for nothing?"))) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(HexOf(HmacSha256(Hex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                         Bytes(50, 0xcd))) ==
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
  // Case 6: a key longer than the block size is hashed first.
  CHECK(HexOf(HmacSha256(Bytes(131, 0xaa),
                         AsBytes("Test Using Larger Than Block-Size Key - Hash Key First"))) ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  CHECK(
      HexOf(HmacSha256(
          Bytes(131, 0xaa),
          AsBytes("This is a test using a larger than block-size key and a larger than block-size "
                  "data. The key needs to be hashed before being used by the HMAC algorithm."))) ==
      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

TEST_CASE("HMAC-SHA256 accepts an empty key and compares in constant time", "[crypto][hash]") {
  const Sha256Digest a = HmacSha256({}, AsBytes("x"));
  const Sha256Digest b = HmacSha256(Bytes(1, 0), AsBytes("x"));
  // HMAC pads keys with zeros to the block size, so "" and "\0" are the same key (RFC 2104).
  CHECK(ConstantTimeEqual(a, b));
  CHECK_FALSE(ConstantTimeEqual(a, HmacSha256(Bytes(1, 1), AsBytes("x"))));
}

}  // namespace
}  // namespace kmsfs::crypto
