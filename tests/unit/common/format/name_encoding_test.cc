#include "common/format/name_encoding.h"

#include <string>

#include "common/format/base64.h"
#include "tests/catch.h"
#include "tests/unit/common/format/test_util.h"

namespace kmsfs::format {
namespace {

Bytes SivOutput(size_t name_len) {
  Bytes b(kSivTagLen + name_len);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(i * 7 + 3);
  return b;
}

TEST_CASE("plaintext names follow the directory entry rules", "[format][names]") {
  for (std::string ok :
       {std::string("a"), std::string("..."), std::string(".hidden"), std::string("a..b"),
        std::string(255, 'x'), std::string("\xff\xfe"), std::string("kmsfs.conf")}) {
    CAPTURE(ok);
    CHECK(ValidatePlaintextName(ok).ok());
    CHECK(ValidateDecryptedName(ok).ok());
  }
  for (std::string bad :
       {std::string(""), std::string("."), std::string(".."), std::string("a/b"), std::string("/"),
        std::string("a\0b", 3), std::string(1, '\0'), std::string(256, 'x')}) {
    CAPTURE(bad.size());
    auto s = ValidatePlaintextName(bad);
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(ValidateDecryptedName(bad).code() == Code::kCorrupt);
  }
  // Errors never echo the name.
  CHECK(ValidatePlaintextName("secret/plan").error().message().find("secret") == std::string::npos);
}

TEST_CASE("encoded names round-trip over every name length", "[format][names]") {
  for (size_t len = 1; len <= kMaxNameLen; ++len) {
    CAPTURE(len);
    const Bytes siv = SivOutput(len);
    const std::string encoded = EncodeName(siv);
    CHECK(encoded.size() == Base64UrlEncodedLen(siv.size()));
    CHECK_FALSE(IsReservedBackingName(encoded));
    CHECK(encoded.find('/') == std::string::npos);
    auto back = DecodeBackingName(encoded);
    REQUIRE(back.ok());
    CHECK(*back == siv);
    // Names of up to 175 bytes encode within 255 bytes; longer ones need a long name.
    CHECK(NeedsLongName(encoded) == (len > 175));
  }
}

TEST_CASE("backing names that are not encoded names are kCorrupt", "[format][names]") {
  const std::string good = EncodeName(SivOutput(10));
  for (std::string bad :
       {std::string(""), std::string("a"), good.substr(0, 22), EncodeName(SivOutput(1)).substr(1),
        good + "=", good.substr(0, good.size() - 1) + "+", good.substr(0, 20) + "/",
        std::string(363, 'A'), std::string("kmsfs.conf"), std::string(".."), std::string("Zh")}) {
    CAPTURE(bad);
    auto r = DecodeBackingName(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kCorrupt);
  }
  // 16 bytes decode fine as base64url but carry no name at all.
  CHECK_FALSE(DecodeBackingName(Base64UrlEncode(Bytes(16, 1))).ok());
  CHECK(DecodeBackingName(Base64UrlEncode(Bytes(17, 1))).ok());
  CHECK(DecodeBackingName(Base64UrlEncode(Bytes(271, 1))).ok());
  CHECK_FALSE(DecodeBackingName(Base64UrlEncode(Bytes(272, 1))).ok());
}

TEST_CASE("long names", "[format][names]") {
  std::array<uint8_t, 32> digest;
  for (size_t i = 0; i < digest.size(); ++i) digest[i] = uint8_t(0xe0 + i);
  const std::string name = LongNameFor(digest);
  CHECK(name == "kmsfs.longname." + Base64UrlEncode(digest));
  CHECK(name.size() == 58);
  CHECK(IsReservedBackingName(name));
  auto parsed = ParseLongName(name);
  REQUIRE(parsed.ok());
  CHECK(*parsed == digest);

  const std::string side = LongNameSideFile(name);
  CHECK(side == name + ".name");
  CHECK(IsReservedBackingName(side));
  CHECK(IsLongNameSideFile(side));
  CHECK_FALSE(IsLongNameSideFile(name));
  CHECK_FALSE(ParseLongName(side).ok());

  for (std::string bad : {std::string("kmsfs.longname."), name.substr(0, 57), name + "A",
                          "kmsfs.longnamE." + name.substr(15), name.substr(0, 57) + "=",
                          name.substr(0, 57) + "B" /* nonzero trailing bits */}) {
    CAPTURE(bad);
    CHECK(ParseLongName(bad).error().code() == Code::kCorrupt);
    CHECK_FALSE(IsLongNameSideFile(bad + ".name"));
  }
  CHECK_FALSE(IsLongNameSideFile(name + ".nam"));
  CHECK_FALSE(IsLongNameSideFile(name + ".names"));
}

TEST_CASE("long name side files hold exactly a long encoded name", "[format][names]") {
  const std::string long_encoded = EncodeName(SivOutput(200));
  REQUIRE(NeedsLongName(long_encoded));
  auto ok = ParseLongNameSideFile(AsBytes(long_encoded));
  REQUIRE(ok.ok());
  CHECK(*ok == long_encoded);
  const std::string short_encoded = EncodeName(SivOutput(20));
  CHECK(ParseLongNameSideFile(AsBytes(short_encoded)).error().code() == Code::kCorrupt);
  CHECK(ParseLongNameSideFile(AsBytes(long_encoded + "\n")).error().code() == Code::kCorrupt);
  CHECK(ParseLongNameSideFile(AsBytes(long_encoded.substr(0, long_encoded.size() - 3)))
            .error()
            .code() == Code::kCorrupt);
  CHECK(ParseLongNameSideFile(AsBytes(std::string(300, '.'))).error().code() == Code::kCorrupt);
}

TEST_CASE("reserved backing names", "[format][names]") {
  for (const char* n : {"kmsfs.conf", "kmsfs.dirid", "kmsfs.", "kmsfs.anything"}) {
    CHECK(IsReservedBackingName(n));
  }
  for (const char* n : {"kmsfs", "KMSFS.conf", "xkmsfs.conf", "kmsfsconf", "AAAA"}) {
    CHECK_FALSE(IsReservedBackingName(n));
  }
}

TEST_CASE("dir id files hold 16 nonzero bytes", "[format][names]") {
  const Id128 id = testing::IdFromSeed(5);
  auto parsed = ParseDirId(id);
  REQUIRE(parsed.ok());
  CHECK(*parsed == id);
  CHECK(ParseDirId(Bytes(16, 0)).error().code() == Code::kCorrupt);
  CHECK(ParseDirId(Bytes(15, 1)).error().code() == Code::kCorrupt);
  CHECK(ParseDirId(Bytes(17, 1)).error().code() == Code::kCorrupt);
  CHECK(ParseDirId(Bytes{}).error().code() == Code::kCorrupt);
}

}  // namespace
}  // namespace kmsfs::format
