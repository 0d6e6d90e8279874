#include "common/format/block_layout.h"

#include "tests/catch.h"
#include "tests/unit/common/format/test_util.h"

namespace kmsfs::format {
namespace {

using testing::IdFromSeed;
using testing::Unhex;

constexpr uint64_t kB = kBlockSize;
constexpr uint64_t kGroupBytes = kBlocksPerGroup * kB;  // plaintext bytes per group

TEST_CASE("block offsets interleave one metadata page per 128 data pages", "[format][layout]") {
  CHECK(MetaOffset(0) == 4096);
  CHECK(EntryOffsetInMeta(0) == 0);
  CHECK(DataOffset(0) == 8192);
  CHECK(DataOffset(1) == 12288);
  CHECK(EntryOffsetInMeta(1) == 32);
  CHECK(MetaOffset(127) == 4096);
  CHECK(EntryOffsetInMeta(127) == 127 * 32);
  CHECK(DataOffset(127) == 8192 + 127 * kB);
  CHECK(MetaOffset(128) == 4096 + 129 * kB);
  CHECK(EntryOffsetInMeta(128) == 0);
  CHECK(DataOffset(128) == 4096 + 130 * kB);
  for (uint64_t b :
       {uint64_t{0}, uint64_t{1}, uint64_t{127}, uint64_t{128}, uint64_t{1000}, kMaxBlocks - 1}) {
    CAPTURE(b);
    CHECK(DataOffset(b) % 4096 == 0);  // data pages stay page-aligned
    CHECK(MetaOffset(b) % 4096 == 0);
    CHECK(DataOffset(b) > MetaOffset(b));
    CHECK(DataOffset(b) - MetaOffset(b) == kMetaPageSize + (b % 128) * kB);
  }
  // The largest offset still fits a signed off_t.
  CHECK(DataOffset(kMaxBlocks - 1) + kB < (uint64_t{1} << 63));
}

TEST_CASE("block counts and lengths", "[format][layout]") {
  CHECK(BlockCount(0) == 1);
  CHECK(BlockPlaintextLen(0, 0) == 0);
  CHECK(BlockCount(1) == 1);
  CHECK(BlockPlaintextLen(1, 0) == 1);
  CHECK(BlockCount(4095) == 1);
  CHECK(BlockCount(4096) == 1);
  CHECK(BlockPlaintextLen(4096, 0) == 4096);
  CHECK(BlockCount(4097) == 2);
  CHECK(BlockPlaintextLen(4097, 0) == 4096);
  CHECK(BlockPlaintextLen(4097, 1) == 1);
  CHECK(BlockCount(kMaxPlaintextSize) == kMaxBlocks);
}

TEST_CASE("backing size at the edges", "[format][layout]") {
  struct Case {
    uint64_t plain, backing;
  };
  const Case kCases[] = {
      {0, 8192},  // header + meta, block 0 FINAL length 0
      {1, 8193},
      {4095, 8192 + 4095},
      {4096, 8192 + 4096},
      {4097, 8192 + 4096 + 1},
      {kGroupBytes - 1, 4096 + 4096 + kGroupBytes - 1},
      {kGroupBytes, 4096 + 4096 + kGroupBytes},  // ends exactly on the group boundary
      {kGroupBytes + 1, 4096 + 2 * 4096 + kGroupBytes + 1},
      // 5 GiB = 1310720 blocks = 10240 full groups, no partial group.
      {5ull << 30, 4096 + 10240 * kGroupSize},
      {(5ull << 30) + 1, 4096 + 10240 * kGroupSize + 4096 + 1},
  };
  for (const Case& c : kCases) {
    CAPTURE(c.plain);
    auto backing = BackingSizeForPlaintextSize(c.plain);
    REQUIRE(backing.ok());
    CHECK(*backing == c.backing);
    auto plain = PlaintextSizeForBackingSize(c.backing);
    REQUIRE(plain.ok());
    CHECK(*plain == c.plain);
    // The backing file ends exactly where the last block's data ends.
    const uint64_t last = BlockCount(c.plain) - 1;
    CHECK(*backing == DataOffset(last) + BlockPlaintextLen(c.plain, last));
  }
  CHECK(BackingSizeForPlaintextSize(kMaxPlaintextSize).ok());
  CHECK(BackingSizeForPlaintextSize(kMaxPlaintextSize + 1).error().code() ==
        Code::kInvalidArgument);
  CHECK(BackingSizeForPlaintextSize(UINT64_MAX).error().code() == Code::kInvalidArgument);
}

TEST_CASE("plaintext size of backing size inverts backing size", "[format][layout]") {
  // Dense over the first three groups, then around group boundaries further out.
  for (uint64_t size = 0; size <= 3 * kGroupBytes + 2 * kB; size += (size < 3 * kB ? 1 : 509)) {
    auto backing = BackingSizeForPlaintextSize(size);
    REQUIRE(backing.ok());
    auto back = PlaintextSizeForBackingSize(*backing);
    REQUIRE(back.ok());
    REQUIRE(*back == size);
  }
  for (uint64_t g : {uint64_t{1}, uint64_t{2}, uint64_t{1000}, uint64_t{1} << 30}) {
    for (int64_t d = -4097; d <= 4097; ++d) {
      const uint64_t size = g * kGroupBytes + uint64_t(d);
      auto backing = BackingSizeForPlaintextSize(size);
      REQUIRE(backing.ok());
      REQUIRE(*PlaintextSizeForBackingSize(*backing) == size);
    }
  }
  REQUIRE(*PlaintextSizeForBackingSize(*BackingSizeForPlaintextSize(kMaxPlaintextSize)) ==
          kMaxPlaintextSize);
}

TEST_CASE("every valid backing size maps back to itself", "[format][layout]") {
  // Over the first two groups and a bit, each backing size is either rejected or exactly the
  // image of one plaintext size: the mapping has no ambiguous or lossy spots.
  for (uint64_t backing = 0; backing <= 4096 + 2 * kGroupSize + 8192; ++backing) {
    auto plain = PlaintextSizeForBackingSize(backing);
    if (!plain.ok()) {
      REQUIRE(plain.error().code() == Code::kCorrupt);
      continue;
    }
    REQUIRE(*BackingSizeForPlaintextSize(*plain) == backing);
  }
}

TEST_CASE("backing sizes no writer produces are kCorrupt", "[format][layout]") {
  auto rejected = [](uint64_t backing) {
    auto r = PlaintextSizeForBackingSize(backing);
    return !r.ok() && r.error().code() == Code::kCorrupt;
  };
  // Below the minimum: empty, header only, a torn first metadata page.
  for (uint64_t s : {0, 1, 4095, 4096, 4097, 8191}) CHECK(rejected(s));
  CHECK_FALSE(rejected(8192));
  // Inside a later metadata page, or a metadata page with no data after it.
  for (uint64_t g : {uint64_t{1}, uint64_t{2}, uint64_t{10240}}) {
    const uint64_t meta = 4096 + g * kGroupSize;
    CAPTURE(g);
    CHECK_FALSE(rejected(meta));  // previous group complete
    CHECK(rejected(meta + 1));
    CHECK(rejected(meta + 4095));
    CHECK(rejected(meta + 4096));  // a group without data
    CHECK_FALSE(rejected(meta + 4097));
  }
  CHECK(rejected(UINT64_MAX));
  CHECK(rejected(*BackingSizeForPlaintextSize(kMaxPlaintextSize) + 1));
}

MetaEntry SampleEntry(uint8_t flags) {
  MetaEntry e;
  for (size_t i = 0; i < e.nonce.size(); ++i) e.nonce[i] = uint8_t(0x10 + i);
  for (size_t i = 0; i < e.tag.size(); ++i) e.tag[i] = uint8_t(0x40 + i);
  e.flags = flags;
  return e;
}

TEST_CASE("metadata entries serialize to 32 bytes and back", "[format][layout]") {
  for (uint8_t flags : {uint8_t{0}, kEntryFinal, kEntryHole, uint8_t(kEntryFinal | kEntryHole)}) {
    auto bytes = SerializeMetaEntry(SampleEntry(flags));
    REQUIRE(bytes.ok());
    auto back = ParseMetaEntry(*bytes);
    REQUIRE(back.ok());
    CHECK(*back == SampleEntry(flags));
  }
  auto bytes = *SerializeMetaEntry(SampleEntry(kEntryFinal));
  CHECK(Bytes(bytes.begin(), bytes.end()) == Unhex("101112131415161718191a1b"          // nonce
                                                   "404142434445464748494a4b4c4d4e4f"  // tag
                                                   "01"         // flags: FINAL
                                                   "000000"));  // reserved
  // The empty entry is all zeros, both ways.
  auto empty = *SerializeMetaEntry(MetaEntry{});
  CHECK(empty == std::array<uint8_t, 32>{});
  CHECK(ParseMetaEntry(empty)->IsEmpty());
  CHECK_FALSE(SampleEntry(0).IsEmpty());
}

TEST_CASE("metadata entry parsing is strict", "[format][layout]") {
  const auto good = *SerializeMetaEntry(SampleEntry(kEntryFinal));
  SECTION("every byte change is rejected or canonical") {
    for (size_t i = 0; i < good.size(); ++i) {
      for (int v = 0; v < 256; ++v) {
        if (v == good[i]) continue;
        auto m = good;
        m[i] = uint8_t(v);
        auto r = ParseMetaEntry(m);
        CAPTURE(i, v);
        if (i >= 29) REQUIRE_FALSE(r.ok());                             // reserved
        if (i == 28 && (v & ~kEntryKnownFlags)) REQUIRE_FALSE(r.ok());  // unknown flags
        if (r.ok()) {
          auto again = SerializeMetaEntry(*r);
          REQUIRE(again.ok());
          REQUIRE(*again == m);
        } else {
          REQUIRE(r.error().code() == Code::kCorrupt);
        }
      }
    }
  }
  SECTION("wrong sizes") {
    for (size_t n : {0, 1, 31, 33, 64}) {
      Bytes b(n, 0);
      CHECK(ParseMetaEntry(b).error().code() == Code::kCorrupt);
    }
  }
  SECTION("a present entry needs a nonzero nonce") {
    std::array<uint8_t, 32> m{};
    m[12] = 1;  // tag byte set, nonce zero
    CHECK_FALSE(ParseMetaEntry(m).ok());
    m = {};
    m[28] = kEntryFinal;  // FINAL without nonce or tag
    CHECK_FALSE(ParseMetaEntry(m).ok());
    MetaEntry e = SampleEntry(0);
    e.nonce = {};
    CHECK(SerializeMetaEntry(e).error().code() == Code::kInvalidArgument);
  }
  SECTION("serialize refuses unknown flags") {
    CHECK(SerializeMetaEntry(SampleEntry(0x04)).error().code() == Code::kInvalidArgument);
    CHECK(SerializeMetaEntry(SampleEntry(0x80)).error().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("entry position rules: present before FINAL, FINAL last, empty after",
          "[format][layout]") {
  const MetaEntry data = SampleEntry(0);
  const MetaEntry final_entry = SampleEntry(kEntryFinal);
  const MetaEntry final_hole = SampleEntry(kEntryFinal | kEntryHole);
  const MetaEntry hole = SampleEntry(kEntryHole);
  const MetaEntry empty{};
  auto code = [](const Status& s) { return s.code(); };
  // Three blocks.
  CHECK(code(CheckEntryForBlock(data, 0, 3)) == Code::kOk);
  CHECK(code(CheckEntryForBlock(hole, 1, 3)) == Code::kOk);
  CHECK(code(CheckEntryForBlock(final_entry, 2, 3)) == Code::kOk);
  CHECK(code(CheckEntryForBlock(final_hole, 2, 3)) == Code::kOk);
  CHECK(code(CheckEntryForBlock(empty, 3, 3)) == Code::kOk);
  CHECK(code(CheckEntryForBlock(empty, 127, 3)) == Code::kOk);
  // Extension: the old FINAL block is no longer last.
  CHECK(code(CheckEntryForBlock(final_entry, 1, 3)) == Code::kCorrupt);
  // Truncation: the new last block is not FINAL.
  CHECK(code(CheckEntryForBlock(data, 2, 3)) == Code::kCorrupt);
  // A zeroed entry inside the file.
  CHECK(code(CheckEntryForBlock(empty, 0, 3)) == Code::kCorrupt);
  CHECK(code(CheckEntryForBlock(empty, 2, 3)) == Code::kCorrupt);
  // Anything after FINAL.
  CHECK(code(CheckEntryForBlock(data, 3, 3)) == Code::kCorrupt);
  CHECK(code(CheckEntryForBlock(final_entry, 4, 3)) == Code::kCorrupt);
  // The empty file: block 0 FINAL.
  CHECK(code(CheckEntryForBlock(final_entry, 0, 1)) == Code::kOk);
  CHECK(code(CheckEntryForBlock(empty, 0, 1)) == Code::kCorrupt);
}

TEST_CASE("block AAD binds volume, file, position, flags and length", "[format][layout]") {
  auto aad = BlockAad(IdFromSeed(0x00), IdFromSeed(0x10), 0x0102030405060708ull, kEntryFinal, 4096);
  CHECK(Bytes(aad.begin(), aad.end()) == Unhex("4b4d4231"                          // "KMB1"
                                               "000102030405060708090a0b0c0d0e0f"  // volume id
                                               "101112131415161718191a1b1c1d1e1f"  // file id
                                               "0102030405060708"                  // block index
                                               "01"                                // flags
                                               "00001000"));  // plaintext length
  const auto base = BlockAad(IdFromSeed(1), IdFromSeed(2), 5, 0, 4096);
  CHECK(BlockAad(IdFromSeed(9), IdFromSeed(2), 5, 0, 4096) != base);
  CHECK(BlockAad(IdFromSeed(1), IdFromSeed(9), 5, 0, 4096) != base);
  CHECK(BlockAad(IdFromSeed(1), IdFromSeed(2), 6, 0, 4096) != base);
  CHECK(BlockAad(IdFromSeed(1), IdFromSeed(2), 5, kEntryFinal, 4096) != base);
  CHECK(BlockAad(IdFromSeed(1), IdFromSeed(2), 5, kEntryHole, 4096) != base);
  CHECK(BlockAad(IdFromSeed(1), IdFromSeed(2), 5, 0, 4095) != base);
}

}  // namespace
}  // namespace kmsfs::format
