#include "common/format/base64.h"

#include <string>

#include "tests/catch.h"

namespace kmsfs::format {
namespace {

std::string Decoded(std::string_view text) {
  auto r = Base64Decode(text);
  REQUIRE(r.ok());
  return std::string(AsChars(*r));
}

TEST_CASE("base64 matches the RFC 4648 section 10 vectors", "[format][base64]") {
  const std::pair<const char*, const char*> kVectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : kVectors) {
    CAPTURE(plain);
    CHECK(Base64Encode(AsBytes(plain)) == encoded);
    CHECK(Decoded(encoded) == plain);
  }
}

TEST_CASE("base64url matches RFC 4648 vectors without padding", "[format][base64]") {
  const std::pair<const char*, const char*> kVectors[] = {
      {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : kVectors) {
    CAPTURE(plain);
    CHECK(Base64UrlEncode(AsBytes(plain)) == encoded);
    auto r = Base64UrlDecode(encoded);
    REQUIRE(r.ok());
    CHECK(AsChars(*r) == plain);
  }
}

TEST_CASE("the two alphabets differ only in positions 62 and 63", "[format][base64]") {
  const Bytes b{0xfb, 0xff, 0xbf};
  CHECK(Base64Encode(b) == "+/+/");
  CHECK(Base64UrlEncode(b) == "-_-_");
  CHECK_FALSE(Base64Decode("-_-_").ok());
  CHECK_FALSE(Base64UrlDecode("+/+/").ok());
}

TEST_CASE("base64 round-trips every length and byte value", "[format][base64]") {
  Bytes data;
  for (size_t n = 0; n < 300; ++n) {
    CAPTURE(n);
    auto std_text = Base64Encode(data);
    auto url_text = Base64UrlEncode(data);
    CHECK(std_text.size() == Base64EncodedLen(n));
    CHECK(url_text.size() == Base64UrlEncodedLen(n));
    auto a = Base64Decode(std_text);
    auto b = Base64UrlDecode(url_text);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(*a == data);
    CHECK(*b == data);
    data.push_back(uint8_t(n * 37 + 11));
  }
}

TEST_CASE("base64 decoding is strict", "[format][base64]") {
  const char* kBad[] = {
      "Zg",         // missing padding
      "Zg=",        // short padding
      "Zg===",      // length not a multiple of 4
      "Z===",       // three pad characters
      "====",       // only padding
      "Zm9v====",   // a whole block of padding
      "Zm=v",       // padding in the middle
      "=m9v",       // padding first
      "Zh==",       // nonzero trailing bits (Zg== is canonical)
      "Zm9=",       // nonzero trailing bits (Zm8= is canonical)
      "Zm9v\n",     // whitespace
      " Zm9v",      // whitespace
      "Zm9v Zm9v",  // whitespace
      "Zm9*",       // character outside the alphabet
      "Zm9\x80",    // high byte
  };
  for (const char* text : kBad) {
    CAPTURE(text);
    auto r = Base64Decode(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kInvalidArgument);
  }
  CHECK_FALSE(Base64Decode(std::string_view("Zm\0v", 4)).ok());
}

TEST_CASE("base64url decoding is strict", "[format][base64]") {
  const char* kBad[] = {"Z", "Zg==", "Zg=", "Zh", "Zm9", "Zm9v\n", "Zm9v+", "Zm9v/", "Zm9vY"};
  for (const char* text : kBad) {
    CAPTURE(text);
    auto r = Base64UrlDecode(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kInvalidArgument);
  }
  CHECK(Base64UrlDecode("Zm8").ok());
}

TEST_CASE("each byte string has exactly one accepted encoding", "[format][base64]") {
  // Exhaustive over 2-symbol and 3-symbol texts: whatever decodes must re-encode identically.
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (char a : alphabet) {
    for (char b : alphabet) {
      std::string two{a, b};
      if (auto r = Base64UrlDecode(two); r.ok()) CHECK(Base64UrlEncode(*r) == two);
      for (char c : alphabet) {
        std::string three{a, b, c};
        if (auto r = Base64UrlDecode(three); r.ok()) CHECK(Base64UrlEncode(*r) == three);
      }
    }
  }
}

}  // namespace
}  // namespace kmsfs::format
