#include "common/format/wrapped_blob.h"

#include "tests/catch.h"
#include "tests/unit/common/format/test_util.h"

namespace kmsfs::format {
namespace {

using testing::SampleBlob;
using testing::SampleBlobBytes;
using testing::Unhex;

TEST_CASE("wrapped blob serializes to the documented bytes and back", "[format][blob]") {
  auto bytes = SerializeWrappedBlob(SampleBlob());
  REQUIRE(bytes.ok());
  CHECK(*bytes == SampleBlobBytes());
  CHECK(bytes->size() == WrappedBlob::kFixedLen + 2 + 32);
  auto back = ParseWrappedBlob(*bytes);
  REQUIRE(back.ok());
  CHECK(*back == SampleBlob());
  auto key = PeekWrappedBlobKey(*bytes);
  REQUIRE(key.ok());
  CHECK(key->first == "k1");
  CHECK(key->second == 7u);
}

TEST_CASE("the AAD prefix is the serialized blob up to and including the salt", "[format][blob]") {
  const Bytes prefix = SampleBlob().AadPrefix();
  const Bytes full = SampleBlobBytes();
  REQUIRE(prefix.size() == 4 + 1 + 1 + 2 + 4 + 16);
  CHECK(Bytes(full.begin(), full.begin() + long(prefix.size())) == prefix);
  WrappedBlob bad = SampleBlob();
  bad.key_id = "no spaces";
  CHECK(bad.AadPrefix().empty());
  bad = SampleBlob();
  bad.key_version = 0;
  CHECK(bad.AadPrefix().empty());
}

TEST_CASE("wrapped blob field bounds", "[format][blob]") {
  WrappedBlob b = SampleBlob();
  SECTION("key ids: 1..64 of [A-Za-z0-9-]") {
    for (std::string id : {std::string("a"), std::string(64, 'Z'),
                           std::string("1234abcd-12ab-34cd-56ef-1234567890ab")}) {
      b.key_id = id;
      auto bytes = SerializeWrappedBlob(b);
      REQUIRE(bytes.ok());
      CHECK(ParseWrappedBlob(*bytes)->key_id == id);
    }
    for (std::string id :
         {std::string(), std::string(65, 'a'), std::string("alias/x"), std::string("a b"),
          std::string("a_b"), std::string("a\0b", 3), std::string("\xc3\xa9")}) {
      b.key_id = id;
      CHECK(SerializeWrappedBlob(b).error().code() == Code::kInvalidArgument);
    }
  }
  SECTION("key version >= 1") {
    b.key_version = 0;
    CHECK(SerializeWrappedBlob(b).error().code() == Code::kInvalidArgument);
    b.key_version = UINT32_MAX;
    CHECK(ParseWrappedBlob(*SerializeWrappedBlob(b))->key_version == UINT32_MAX);
  }
  SECTION("ciphertext 1..4096 bytes") {
    b.ciphertext.clear();
    CHECK(SerializeWrappedBlob(b).error().code() == Code::kInvalidArgument);
    b.ciphertext.assign(1, 0xaa);
    CHECK(ParseWrappedBlob(*SerializeWrappedBlob(b)).ok());
    b.key_id = std::string(64, 'k');
    b.ciphertext.assign(4096, 0xaa);
    auto max = SerializeWrappedBlob(b);
    REQUIRE(max.ok());
    CHECK(max->size() == WrappedBlob::kMaxLen);
    CHECK(ParseWrappedBlob(*max).ok());
    b.ciphertext.assign(4097, 0xaa);
    CHECK(SerializeWrappedBlob(b).error().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("every truncation and every extension of a blob is kCorrupt", "[format][blob]") {
  const Bytes full = SampleBlobBytes();
  for (size_t n = 0; n < full.size(); ++n) {
    CAPTURE(n);
    auto r = ParseWrappedBlob(ByteSpan(full).first(n));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kCorrupt);
    CHECK_FALSE(PeekWrappedBlobKey(ByteSpan(full).first(n)).ok());
  }
  for (int extra = 1; extra <= 3; ++extra) {
    Bytes longer = full;
    longer.resize(full.size() + extra, 0);
    CHECK(ParseWrappedBlob(longer).error().code() == Code::kCorrupt);
  }
}

TEST_CASE("every single-byte change to a blob is rejected or re-serializes to itself",
          "[format][blob]") {
  // Offsets of the sample: magic 0..3, version 4, key_id_len 5, key_id 6..7, key_version 8..11,
  // salt 12..27, nonce 28..39, ct_len 40..41, ciphertext 42..73, tag 74..89.
  const Bytes full = SampleBlobBytes();
  auto structural = [](size_t i) { return i <= 5 || i == 40 || i == 41; };
  for (size_t i = 0; i < full.size(); ++i) {
    for (int v = 0; v < 256; ++v) {
      if (v == full[i]) continue;
      Bytes m = full;
      m[i] = uint8_t(v);
      auto r = ParseWrappedBlob(m);
      if (structural(i)) {
        CAPTURE(i, v);
        CHECK_FALSE(r.ok());
      }
      if (r.ok()) {
        // Accepted only as a different, canonical blob: no byte is ignored by the parser.
        auto again = SerializeWrappedBlob(*r);
        REQUIRE(again.ok());
        if (*again != m) {
          CAPTURE(i, v);
          FAIL("accepted a non-canonical blob");
        }
      } else if (r.error().code() != Code::kCorrupt) {
        CAPTURE(i, v);
        FAIL("parse failed with a code other than kCorrupt");
      }
    }
  }
  // Specific expectations for the variable fields.
  Bytes m = full;
  m[8] = m[9] = m[10] = m[11] = 0;  // key_version 0
  CHECK_FALSE(ParseWrappedBlob(m).ok());
  m = full;
  m[6] = '/';  // key id char outside the alphabet
  CHECK_FALSE(ParseWrappedBlob(m).ok());
  m = full;
  m[6] = 'Q';  // still a valid key id: a different blob, which unwrap would reject
  CHECK(ParseWrappedBlob(m)->key_id == "Q1");
}

TEST_CASE("oversize blobs are rejected before parsing", "[format][blob]") {
  Bytes huge(WrappedBlob::kMaxLen + 1, 0);
  CHECK(ParseWrappedBlob(huge).error().code() == Code::kCorrupt);
  CHECK(ParseWrappedBlob(Unhex("4b4d5742")).error().code() == Code::kCorrupt);
}

}  // namespace
}  // namespace kmsfs::format
