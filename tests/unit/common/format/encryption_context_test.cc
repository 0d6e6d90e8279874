#include "common/format/encryption_context.h"

#include "tests/catch.h"
#include "tests/unit/common/format/test_util.h"

namespace kmsfs::format {
namespace {

using testing::IdFromSeed;
using testing::Unhex;

TEST_CASE("canonical context bytes are length-prefixed and key-sorted", "[format][context]") {
  EncryptionContext ctx{{"b", "2"}, {"a", ""}};
  auto bytes = CanonicalContext(ctx);
  REQUIRE(bytes.ok());
  // count 2 | "a" -> "" | "b" -> "2"
  CHECK(*bytes == Unhex("0002"
                        "000161"
                        "0000"
                        "000162"
                        "000132"));
  auto empty = CanonicalContext({});
  REQUIRE(empty.ok());
  CHECK(*empty == Unhex("0000"));
}

TEST_CASE("canonical context enforces its limits", "[format][context]") {
  CHECK(CanonicalContext({{"", "v"}}).error().code() == Code::kInvalidArgument);
  CHECK(CanonicalContext({{std::string(257, 'k'), "v"}}).error().code() == Code::kInvalidArgument);
  CHECK(CanonicalContext({{std::string(256, 'k'), "v"}}).ok());
  CHECK(CanonicalContext({{"k", std::string(2049, 'v')}}).error().code() == Code::kInvalidArgument);
  CHECK(CanonicalContext({{"k", std::string(2048, 'v')}}).ok());
  EncryptionContext many;
  for (int i = 0; i < 32; ++i) many["k" + std::to_string(i)] = "v";
  CHECK(CanonicalContext(many).ok());
  many["k32"] = "v";
  CHECK(CanonicalContext(many).error().code() == Code::kInvalidArgument);
}

TEST_CASE("canonical context parses back, strictly", "[format][context]") {
  EncryptionContext ctx = FileDekContext(IdFromSeed(1), IdFromSeed(100));
  auto bytes = CanonicalContext(ctx);
  REQUIRE(bytes.ok());
  auto back = ParseCanonicalContext(*bytes);
  REQUIRE(back.ok());
  CHECK(*back == ctx);

  SECTION("every truncation and any trailing byte is kCorrupt") {
    for (size_t n = 0; n < bytes->size(); ++n) {
      CAPTURE(n);
      auto r = ParseCanonicalContext(ByteSpan(*bytes).first(n));
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == Code::kCorrupt);
    }
    Bytes longer = *bytes;
    longer.push_back(0);
    CHECK_FALSE(ParseCanonicalContext(longer).ok());
  }
  SECTION("unsorted or duplicate keys are not canonical") {
    CHECK_FALSE(ParseCanonicalContext(Unhex("0002"
                                            "0001"
                                            "62"
                                            "0000"
                                            "0001"
                                            "61"
                                            "0000"))
                    .ok());
    CHECK_FALSE(ParseCanonicalContext(Unhex("0002"
                                            "0001"
                                            "61"
                                            "0000"
                                            "0001"
                                            "61"
                                            "0000"))
                    .ok());
    CHECK(ParseCanonicalContext(Unhex("0002"
                                      "0001"
                                      "61"
                                      "0000"
                                      "0001"
                                      "62"
                                      "0000"))
              .ok());
  }
  SECTION("empty keys and oversized fields are rejected") {
    CHECK_FALSE(ParseCanonicalContext(Unhex("0001"
                                            "0000"
                                            "0000"))
                    .ok());
    CHECK_FALSE(ParseCanonicalContext(Unhex("0021")).ok());  // 33 pairs announced
  }
}

TEST_CASE("the filesystem's contexts name volume, file and purpose in hex", "[format][context]") {
  auto file_ctx = FileDekContext(IdFromSeed(0), IdFromSeed(0x10));
  CHECK(file_ctx.size() == 2);
  CHECK(file_ctx.at("kmsfs:volume") == "000102030405060708090a0b0c0d0e0f");
  CHECK(file_ctx.at("kmsfs:file") == "101112131415161718191a1b1c1d1e1f");
  auto name_ctx = NameKeyContext(IdFromSeed(0));
  CHECK(name_ctx.size() == 2);
  CHECK(name_ctx.at("kmsfs:volume") == "000102030405060708090a0b0c0d0e0f");
  CHECK(name_ctx.at("kmsfs:purpose") == "names");
  // Different purposes never collide, so a name key blob can't stand in for a DEK blob.
  CHECK(*CanonicalContext(file_ctx) != *CanonicalContext(name_ctx));
}

}  // namespace
}  // namespace kmsfs::format
