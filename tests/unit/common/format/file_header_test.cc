#include "common/format/file_header.h"

#include <algorithm>

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
  // Key region padding: any nonzero byte anywhere is rejected.
  for (size_t i = 28 + 90; i < FileHeader::kKeyRegionSize; ++i) {
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
    for (uint16_t len : {uint16_t(0), uint16_t(57), uint16_t(89), uint16_t(91), uint16_t(996),
                         uint16_t(997), uint16_t(4068), uint16_t(0xffff)}) {
      PutU16(page.data() + 26, len);
      CAPTURE(len);
      CHECK(ParseFileHeader(page).error().code() == Code::kCorrupt);
    }
  }
}

LinkTag Tag(uint8_t seed) {
  LinkTag t;
  for (size_t i = 0; i < t.size(); ++i) t[i] = uint8_t(seed + i);
  return t;
}

// Applies a PrepareLinksWrite to `page` and parses the result.
FileHeader Apply(Bytes* page, const LinksWrite& w) {
  REQUIRE(w.bytes.size() == FileHeader::kSlotSize);
  std::copy(w.bytes.begin(), w.bytes.end(), page->begin() + static_cast<ptrdiff_t>(w.offset));
  auto h = ParseFileHeader(*page);
  REQUIRE(h.ok());
  return *h;
}

TEST_CASE("CRC-32C matches the RFC 3720 check value", "[format][header][links]") {
  CHECK(Crc32c(AsBytes(std::string_view("123456789"))) == 0xE3069283u);
  CHECK(Crc32c(Bytes(32, 0)) == 0x8A9136AAu);  // RFC 3720 B.4: 32 bytes of zeros
}

TEST_CASE("link slot: documented layout, golden bytes", "[format][header][links]") {
  FileHeader h = SampleHeader();
  h.links_seq = 1;
  h.links = {Tag(0x30)};
  const Bytes page = *SerializeFileHeader(h);
  const Bytes want = Unhex(
      "00000001"                            // seq 1
      "0001"                                // count 1
      "0000"                                // reserved
      "303132333435363738393a3b3c3d3e3f");  // the tag
  CHECK(Bytes(page.begin() + 1024, page.begin() + 1024 + 24) == want);
  for (size_t i = 1024 + 24; i < 2560 - 4; ++i) REQUIRE(page[i] == 0);
  Bytes slot(page.begin() + 1024, page.begin() + 2560 - 4);
  const uint32_t crc = GetU32(page.data() + 2560 - 4);
  CHECK(crc == Crc32c(slot));
  for (size_t i = 2560; i < 4096; ++i) REQUIRE(page[i] == 0);  // slot 1 never written
  auto back = ParseFileHeader(page);
  REQUIRE(back.ok());
  CHECK(*back == h);
  CHECK(back->HasLink(Tag(0x30)));
  CHECK_FALSE(back->HasLink(Tag(0x31)));
}

TEST_CASE("link slots alternate, and a torn slot leaves the previous set in force",
          "[format][header][links]") {
  Bytes page = *SerializeFileHeader(SampleHeader());  // no links yet (seq 0)
  FileHeader h = *ParseFileHeader(page);
  CHECK(h.links_seq == 0);
  CHECK(h.links.empty());
  const Bytes key_region(page.begin(), page.begin() + 1024);

  auto w1 = PrepareLinksWrite(h, {Tag(0x50), Tag(0x10), Tag(0x50)});  // unsorted, duplicate
  REQUIRE(w1.ok());
  CHECK(w1->offset == 1024);
  h = Apply(&page, *w1);
  CHECK(h.links_seq == 1);
  CHECK(h.links == std::vector<LinkTag>{Tag(0x10), Tag(0x50)});
  CHECK(h.active_slot == 0);

  auto w2 = PrepareLinksWrite(h, {Tag(0x10), Tag(0x50), Tag(0x70)});
  REQUIRE(w2.ok());
  CHECK(w2->offset == 2560);
  h = Apply(&page, *w2);
  CHECK(h.links_seq == 2);
  CHECK(h.active_slot == 1);
  CHECK(h.links.size() == 3);
  CHECK(Bytes(page.begin(), page.begin() + 1024) == key_region);  // never touched

  auto w3 = PrepareLinksWrite(h, {Tag(0x70)});
  REQUIRE(w3.ok());
  CHECK(w3->offset == 1024);
  // Serialize(Parse(b)) == b with the inactive slot kept verbatim.
  CHECK(*SerializeFileHeader(h) == page);

  SECTION("every prefix of the slot write (a torn write) parses as the old or the new set") {
    for (size_t cut = 0; cut <= w3->bytes.size(); cut += 4) {
      Bytes torn = page;
      std::copy_n(w3->bytes.begin(), cut, torn.begin() + 1024);
      auto r = ParseFileHeader(torn);
      REQUIRE(r.ok());
      CAPTURE(cut);
      if (cut == w3->bytes.size()) {
        CHECK(r->links == std::vector<LinkTag>{Tag(0x70)});
      } else {
        CHECK(r->links_seq == 2);
        CHECK(r->links.size() == 3);
      }
      REQUIRE(*SerializeFileHeader(*r) == torn);
    }
  }
  SECTION("a single flipped bit in the active slot falls back to the other slot") {
    for (size_t i = 2560; i < 4096; i += 7) {
      Bytes m = page;
      m[i] ^= 0x08;
      auto r = ParseFileHeader(m);
      REQUIRE(r.ok());
      CAPTURE(i);
      CHECK(r->links_seq == 1);
      CHECK(r->links == std::vector<LinkTag>{Tag(0x10), Tag(0x50)});
    }
  }
  SECTION("both slots damaged is kCorrupt") {
    Bytes m = page;
    m[1024 + 9] ^= 1;
    m[2560 + 9] ^= 1;
    CHECK(ParseFileHeader(m).error().code() == Code::kCorrupt);
  }
  SECTION("two valid slots with the same seq are kCorrupt") {
    Bytes m = page;
    std::copy_n(page.begin() + 2560, 1536, m.begin() + 1024);
    CHECK(ParseFileHeader(m).error().code() == Code::kCorrupt);
  }
}

TEST_CASE("link slot structure is strict", "[format][header][links]") {
  FileHeader h = SampleHeader();
  h.links_seq = 5;
  h.links = {Tag(0x10), Tag(0x20)};
  const Bytes page = *SerializeFileHeader(h);
  // Rewrites slot 0 with `edit` applied and a recomputed CRC: a slot that is complete but
  // malformed. With slot 1 all zero it must not parse as valid, so the header has no links.
  auto parsed_links = [&](auto edit) {
    Bytes m = page;
    edit(m.data() + 1024);
    PutU32(m.data() + 2560 - 4, Crc32c(ByteSpan(m.data() + 1024, 1532)));
    auto r = ParseFileHeader(m);
    REQUIRE(r.ok());
    return r->links_seq;
  };
  CHECK(parsed_links([](uint8_t*) {}) == 5);
  CHECK(parsed_links([](uint8_t* s) { PutU32(s, 0); }) == 0);       // seq 0
  CHECK(parsed_links([](uint8_t* s) { s[7] = 1; }) == 0);           // reserved
  CHECK(parsed_links([](uint8_t* s) { PutU16(s + 4, 96); }) == 0);  // count > 95
  // count 3: the third tag reads as zeros, which is not above the second.
  CHECK(parsed_links([](uint8_t* s) { PutU16(s + 4, 3); }) == 0);
  CHECK(parsed_links([](uint8_t* s) { std::copy_n(s + 8, 16, s + 24); }) == 0);  // duplicate
  CHECK(parsed_links([](uint8_t* s) { s[8 + 32 + 5] = 1; }) == 0);               // padding
}

TEST_CASE("PrepareLinksWrite and SerializeFileHeader reject bad link sets",
          "[format][header][links]") {
  FileHeader h = SampleHeader();
  std::vector<LinkTag> many;
  for (int i = 0; i < 96; ++i) many.push_back(Tag(uint8_t(i)));
  CHECK(PrepareLinksWrite(h, many).error().code() == Code::kInvalidArgument);
  many.pop_back();
  CHECK(PrepareLinksWrite(h, many).ok());
  h.links_seq = UINT32_MAX;
  h.links = {Tag(1)};
  CHECK(PrepareLinksWrite(h, {}).error().code() == Code::kFailedPrecondition);
  h.links = {Tag(2), Tag(1)};
  CHECK(SerializeFileHeader(h).error().code() == Code::kInvalidArgument);  // not sorted
  h.links_seq = 0;
  h.links = {Tag(1)};
  CHECK(SerializeFileHeader(h).error().code() == Code::kInvalidArgument);  // links without seq
}

TEST_CASE("link MAC input: documented layout, name length 1..255", "[format][header][links]") {
  auto in = LinkMacInput(IdFromSeed(0x10), IdFromSeed(0x20), IdFromSeed(0x30), "abc");
  REQUIRE(in.ok());
  CHECK(*in == Unhex("4b4d4c4e"  // "KMLN"
                     "101112131415161718191a1b1c1d1e1f"
                     "202122232425262728292a2b2c2d2e2f"
                     "303132333435363738393a3b3c3d3e3f"
                     "0003616263"));
  CHECK(LinkMacInput(IdFromSeed(1), IdFromSeed(2), IdFromSeed(3), "").error().code() ==
        Code::kInvalidArgument);
  CHECK(LinkMacInput(IdFromSeed(1), IdFromSeed(2), IdFromSeed(3), std::string(256, 'a'))
            .error()
            .code() == Code::kInvalidArgument);
  CHECK(LinkMacInput(IdFromSeed(1), IdFromSeed(2), IdFromSeed(3), std::string(255, 'a')).ok());
}

}  // namespace
TEST_CASE("a link write names the superseded slot to zero, and zeroing it keeps the new set",
          "[format][header][links]") {
  Bytes page = *SerializeFileHeader(SampleHeader());
  FileHeader h = *ParseFileHeader(page);
  auto w1 = PrepareLinksWrite(h, {Tag(0x10)});
  REQUIRE(w1.ok());
  CHECK_FALSE(w1->clear_previous);  // nothing was in force: slot 1 is empty already
  h = Apply(&page, *w1);
  auto w2 = PrepareLinksWrite(h, {Tag(0x10), Tag(0x20)});  // a rename: old and new name
  REQUIRE(w2.ok());
  REQUIRE(w2->clear_previous);
  CHECK(w2->offset == 2560);
  CHECK(w2->previous_offset == 1024);
  h = Apply(&page, *w2);
  std::fill_n(page.begin() + 1024, FileHeader::kSlotSize, 0);
  h = *ParseFileHeader(page);
  CHECK(h.links == std::vector<LinkTag>{Tag(0x10), Tag(0x20)});
  auto w3 = PrepareLinksWrite(h, {Tag(0x20)});  // the old name goes
  REQUIRE(w3.ok());
  CHECK(w3->offset == 1024);
  CHECK(w3->previous_offset == 2560);
  Apply(&page, *w3);
  std::fill_n(page.begin() + 2560, FileHeader::kSlotSize, 0);
  h = *ParseFileHeader(page);
  CHECK(h.links_seq == 3);
  CHECK(h.links == std::vector<LinkTag>{Tag(0x20)});
  CHECK_FALSE(h.HasLink(Tag(0x10)));
  const LinkTag old = Tag(0x10);
  CHECK(std::search(page.begin() + 1024, page.end(), old.begin(), old.end()) == page.end());
  SECTION("the zeroing torn at any sector: the new set stays in force") {
    // Before the zeroing: the new set in slot 0, the superseded {0x10, 0x20} in slot 1.
    Bytes torn = page;
    std::copy(w2->bytes.begin(), w2->bytes.end(), torn.begin() + 2560);
    for (size_t cut = 512; cut < FileHeader::kSlotSize; cut += 512) {
      Bytes t = torn;
      std::fill_n(t.begin() + 2560, cut, 0);
      auto p = ParseFileHeader(t);
      REQUIRE(p.ok());
      CHECK(p->links == std::vector<LinkTag>{Tag(0x20)});
    }
  }
}

TEST_CASE("HasLink finds a tag anywhere in the set and no near miss", "[format][header][links]") {
  FileHeader h = SampleHeader();
  h.links_seq = 1;
  for (int i = 0; i < 5; ++i) h.links.push_back(Tag(uint8_t(0x10 * (i + 1))));
  for (const LinkTag& t : h.links) CHECK(h.HasLink(t));
  for (size_t byte = 0; byte < 16; ++byte) {
    LinkTag near = h.links[2];
    near[byte] ^= 0x01;
    CHECK_FALSE(h.HasLink(near));
  }
  h.links.clear();
  CHECK_FALSE(h.HasLink(Tag(0x10)));
}

}  // namespace kmsfs::format
