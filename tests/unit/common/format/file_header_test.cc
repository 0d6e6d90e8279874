#include "common/format/file_header.h"

#include "tests/catch.h"
#include "tests/unit/common/format/test_util.h"

namespace kmsfs::format {
namespace {

using testing::IdFromSeed;
using testing::SampleBlob;
using testing::SampleBlobBytes;
using testing::Unhex;

FileHeader SampleHeader() {
  FileHeader h;
  h.file_id = IdFromSeed(0xa0);
  h.wrapped_dek = SampleBlobBytes();
  return h;
}

TEST_CASE("file header is one page in the documented layout", "[format][header]") {
  auto page = SerializeFileHeader(SampleHeader());
  REQUIRE(page.ok());
  REQUIRE(page->size() == 4096);
  const Bytes prefix = Unhex(
      "4b4d5346"                          // magic "KMSF"
      "0001"                              // version
      "00000000"                          // flags
      "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"  // file id
      "005a");                            // blob_len = 90
  CHECK(Bytes(page->begin(), page->begin() + 28) == prefix);
  CHECK(Bytes(page->begin() + 28, page->begin() + 28 + 90) == SampleBlobBytes());
  for (size_t i = 28 + 90; i < 4096; ++i) REQUIRE((*page)[i] == 0);

  auto back = ParseFileHeader(*page);
  REQUIRE(back.ok());
  CHECK(*back == SampleHeader());
}

TEST_CASE("file header must be exactly one page", "[format][header]") {
  Bytes page = *SerializeFileHeader(SampleHeader());
  for (size_t n = 0; n < page.size(); ++n) {
    auto r = ParseFileHeader(ByteSpan(page).first(n));
    REQUIRE_FALSE(r.ok());
    REQUIRE(r.error().code() == Code::kCorrupt);
  }
  page.push_back(0);
  CHECK(ParseFileHeader(page).error().code() == Code::kCorrupt);
}

TEST_CASE("every byte change in the fixed part or padding is kCorrupt", "[format][header]") {
  const Bytes page = *SerializeFileHeader(SampleHeader());
  auto check_rejected = [](const Bytes& m) {
    auto r = ParseFileHeader(m);
    return !r.ok() && r.error().code() == Code::kCorrupt;
  };
  // Magic, version, flags, blob_len: structural, every other value is rejected.
  for (size_t i : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 26, 27}) {
    for (int v = 0; v < 256; ++v) {
      if (v == page[i]) continue;
      Bytes m = page;
      m[i] = uint8_t(v);
      CAPTURE(i, v);
      REQUIRE(check_rejected(m));
    }
  }
  // Padding: any nonzero byte anywhere is rejected.
  for (size_t i = 28 + 90; i < page.size(); ++i) {
    Bytes m = page;
    m[i] = 0x01;
    CAPTURE(i);
    REQUIRE(check_rejected(m));
  }
  // The file id is data (bound by the wrap context and block AADs), except all zero.
  Bytes m = page;
  m[10] ^= 0xff;
  CHECK(ParseFileHeader(m).ok());
  for (size_t i = 10; i < 26; ++i) m[i] = 0;
  CHECK(check_rejected(m));
}

TEST_CASE("every byte change in the embedded blob is rejected or canonical", "[format][header]") {
  const Bytes page = *SerializeFileHeader(SampleHeader());
  for (size_t i = 28; i < 28 + 90; ++i) {
    for (int v = 0; v < 256; ++v) {
      if (v == page[i]) continue;
      Bytes m = page;
      m[i] = uint8_t(v);
      auto r = ParseFileHeader(m);
      if (r.ok()) {
        auto again = SerializeFileHeader(*r);
        REQUIRE(again.ok());
        if (*again != m) {
          CAPTURE(i, v);
          FAIL("accepted a non-canonical header");
        }
      } else if (r.error().code() != Code::kCorrupt) {
        CAPTURE(i, v);
        FAIL("parse failed with a code other than kCorrupt");
      }
    }
  }
}

TEST_CASE("file header rejects odd wrapped keys", "[format][header]") {
  FileHeader h = SampleHeader();
  SECTION("a blob that does not parse") {
    h.wrapped_dek = {1, 2, 3};
    CHECK(SerializeFileHeader(h).error().code() == Code::kInvalidArgument);
  }
  SECTION("a blob of something other than a 256-bit key") {
    WrappedBlob b = SampleBlob();
    b.ciphertext.resize(16);
    h.wrapped_dek = *SerializeWrappedBlob(b);
    CHECK(SerializeFileHeader(h).error().code() == Code::kInvalidArgument);
    // The same blob placed by hand is rejected by the parser.
    Bytes page = *SerializeFileHeader(SampleHeader());
    std::fill(page.begin() + 26, page.end(), 0);
    PutU16(page.data() + 26, uint16_t(h.wrapped_dek.size()));
    std::copy(h.wrapped_dek.begin(), h.wrapped_dek.end(), page.begin() + 28);
    CHECK(ParseFileHeader(page).error().code() == Code::kCorrupt);
  }
  SECTION("a zero file id") {
    h.file_id = {};
    CHECK(SerializeFileHeader(h).error().code() == Code::kInvalidArgument);
  }
  SECTION("blob_len beyond the page") {
    Bytes page = *SerializeFileHeader(SampleHeader());
    for (uint16_t len : {uint16_t(0), uint16_t(57), uint16_t(89), uint16_t(91), uint16_t(4068),
                         uint16_t(4069), uint16_t(0xffff)}) {
      PutU16(page.data() + 26, len);
      CAPTURE(len);
      CHECK(ParseFileHeader(page).error().code() == Code::kCorrupt);
    }
  }
}

}  // namespace
}  // namespace kmsfs::format
