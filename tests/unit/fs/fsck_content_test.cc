// fsck's content check over an in-memory backing file: every kind of block damage is found with
// its block number, and repair zeroes only the damaged blocks, fixes the size, and leaves a file
// that FileContent reads (docs/fsck.md "Content").
#include <algorithm>
#include <string>
#include <vector>

#include "common/format/block_layout.h"
#include "fs/fsck/content_check.h"
#include "tests/catch.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs::fsck {
namespace {

using format::DataOffset;
using format::MetaOffset;
using testing::Pattern;
using testing::TestFile;

constexpr uint64_t kBlock = 4096;

uint64_t EntryOffset(uint64_t i) { return MetaOffset(i) + format::EntryOffsetInMeta(i); }

ContentReport Check(TestFile& f, bool repair) {
  auto r = CheckContent(f.volume_id, f.file_id, f.dek, &f.mem, repair);
  REQUIRE(r.ok());
  return std::move(r).value();
}

// The issues' block ranges and problems, for readable failure messages.
std::string Describe(const ContentReport& r) {
  std::string s;
  for (const auto& i : r.issues) {
    s += "[" + (i.first_block ? std::to_string(*i.first_block) : "-") + ".." +
         (i.last_block ? std::to_string(*i.last_block) : "-") + "] " + i.problem + " / " +
         i.action + "\n";
  }
  return s;
}

void Fill(TestFile& f, const Bytes& data) { REQUIRE(f.content->Write(data, 0).ok()); }

// After a repair the file must be clean on a second check and read completely.
Bytes CleanAndRead(TestFile& f) {
  const ContentReport again = Check(f, false);
  INFO(Describe(again));
  CHECK(again.issues.empty());
  auto fresh = f.Reopen(&f.mem);
  auto size = fresh->Size();
  REQUIRE(size.ok());
  Bytes out(*size);
  auto n = fresh->Read(out, 0);
  REQUIRE(n.ok());
  CHECK(*n == out.size());
  return out;
}

Bytes Zeroed(Bytes b, uint64_t block) {
  const uint64_t end = std::min<uint64_t>(b.size(), (block + 1) * kBlock);
  std::fill(b.begin() + static_cast<std::ptrdiff_t>(block * kBlock),
            b.begin() + static_cast<std::ptrdiff_t>(end), 0);
  return b;
}

TEST_CASE("fsck content: healthy files of every shape have no issues and repair writes nothing",
          "[fsck]") {
  for (uint64_t size : {uint64_t{0}, uint64_t{1}, kBlock, kBlock + 1, 128 * kBlock,
                        128 * kBlock + 1, 300 * kBlock + 5}) {
    INFO("size " << size);
    TestFile f;
    Fill(f, Pattern(size));
    const Bytes before = f.mem.Snapshot();
    const ContentReport r = Check(f, true);
    INFO(Describe(r));
    CHECK(r.issues.empty());
    CHECK(r.blocks_checked == format::BlockCount(size));
    CHECK(r.plaintext_size == size);
    CHECK(f.mem.Snapshot() == before);
  }
  SECTION("a sparse file: holes authenticate") {
    TestFile f;
    REQUIRE(f.content->Write(Pattern(10), 3 * 128 * kBlock + 7).ok());
    const ContentReport r = Check(f, false);
    CHECK(r.issues.empty());
    CHECK(r.blocks_checked == 3 * 128 + 1);
  }
}

TEST_CASE("fsck content: flipped data bytes are found per block and repaired as zeros", "[fsck]") {
  TestFile f;
  const Bytes data = Pattern(130 * kBlock + 7);
  Fill(f, data);
  for (uint64_t b : {5, 6, 129, 130}) {
    Bytes one = f.mem.RawRead(DataOffset(b) + 3, 1);
    one[0] ^= 0x40;
    f.mem.RawWrite(DataOffset(b) + 3, one);
  }
  const ContentReport found = Check(f, false);
  INFO(Describe(found));
  REQUIRE(found.issues.size() == 2);  // blocks 5..6 and 129..130, one range each
  CHECK(*found.issues[0].first_block == 5);
  CHECK(*found.issues[0].last_block == 6);
  CHECK(*found.issues[1].first_block == 129);
  CHECK(*found.issues[1].last_block == 130);
  CHECK(found.issues[0].action.empty());

  const ContentReport repaired = Check(f, true);
  CHECK(repaired.issues.size() == 2);
  CHECK(repaired.issues[0].action == "re-sealed as zeros");
  Bytes want = data;
  for (uint64_t b : {5, 6, 129, 130}) want = Zeroed(want, b);
  CHECK(CleanAndRead(f) == want);
}

TEST_CASE("fsck content: damaged metadata entries (zeroed, malformed, tag, swapped) are found",
          "[fsck]") {
  TestFile f;
  const Bytes data = Pattern(11 * kBlock + 100);
  Fill(f, data);
  SECTION("an entry zeroed") {
    f.mem.RawWrite(EntryOffset(3), Bytes(32, 0));
    const ContentReport r = Check(f, true);
    INFO(Describe(r));
    REQUIRE(r.issues.size() == 1);
    CHECK(*r.issues[0].first_block == 3);
    CHECK(r.issues[0].problem.find("missing") != std::string::npos);
    CHECK(CleanAndRead(f) == Zeroed(data, 3));
  }
  SECTION("an unknown flag bit") {
    Bytes flag = f.mem.RawRead(EntryOffset(4) + 28, 1);
    flag[0] |= 0x80;
    f.mem.RawWrite(EntryOffset(4) + 28, flag);
    const ContentReport r = Check(f, true);
    REQUIRE(r.issues.size() == 1);
    CHECK(r.issues[0].problem.find("malformed") != std::string::npos);
    CHECK(CleanAndRead(f) == Zeroed(data, 4));
  }
  SECTION("two blocks swapped with their entries") {
    const Bytes d2 = f.mem.RawRead(DataOffset(2), kBlock),
                d7 = f.mem.RawRead(DataOffset(7), kBlock);
    const Bytes e2 = f.mem.RawRead(EntryOffset(2), 32), e7 = f.mem.RawRead(EntryOffset(7), 32);
    f.mem.RawWrite(DataOffset(2), d7);
    f.mem.RawWrite(DataOffset(7), d2);
    f.mem.RawWrite(EntryOffset(2), e7);
    f.mem.RawWrite(EntryOffset(7), e2);
    const ContentReport r = Check(f, true);
    INFO(Describe(r));
    REQUIRE(r.issues.size() == 2);
    CHECK(*r.issues[0].first_block == 2);
    CHECK(*r.issues[1].first_block == 7);
    CHECK(CleanAndRead(f) == Zeroed(Zeroed(data, 2), 7));
  }
  SECTION("FINAL set on a middle block (its tag fails) is a damaged block") {
    Bytes flag = f.mem.RawRead(EntryOffset(5) + 28, 1);
    flag[0] |= format::kEntryFinal;
    f.mem.RawWrite(EntryOffset(5) + 28, flag);
    const ContentReport r = Check(f, true);
    INFO(Describe(r));
    REQUIRE(r.issues.size() == 1);
    CHECK(*r.issues[0].first_block == 5);
    CHECK(CleanAndRead(f) == Zeroed(data, 5));
  }
  SECTION("a non-empty entry after the final block") {
    f.mem.RawWrite(EntryOffset(20), Bytes(32, 0x11));
    const ContentReport r = Check(f, true);
    INFO(Describe(r));
    REQUIRE(r.issues.size() == 1);
    CHECK(*r.issues[0].first_block == 20);
    CHECK(CleanAndRead(f) == data);
  }
}

TEST_CASE("fsck content: a file cut at a block boundary gets FINAL on its last block", "[fsck]") {
  TestFile f;
  const Bytes data = Pattern(11 * kBlock);
  Fill(f, data);
  f.mem.RawTruncate(DataOffset(10));  // block 10 gone; block 9 is not FINAL
  const ContentReport r = Check(f, true);
  INFO(Describe(r));
  REQUIRE(r.issues.size() == 1);
  CHECK(r.issues[0].problem.find("cut at a block boundary") != std::string::npos);
  CHECK(*r.issues[0].first_block == 9);
  CHECK(r.plaintext_size == 10 * kBlock);
  CHECK(CleanAndRead(f) == Bytes(data.begin(), data.begin() + 10 * kBlock));
}

TEST_CASE("fsck content: a file extended past its FINAL block is cut back to its authentic end",
          "[fsck]") {
  SECTION("a block appended from another file") {
    TestFile a(2), b(3);
    const Bytes da = Pattern(10 * kBlock, 0, 1);
    Fill(a, da);
    Fill(b, Pattern(kBlock * 10 + 100, 0, 2));
    a.mem.RawWrite(DataOffset(10), b.mem.RawRead(DataOffset(10), 100));
    a.mem.RawWrite(EntryOffset(10), b.mem.RawRead(EntryOffset(10), 32));
    const ContentReport r = Check(a, true);
    INFO(Describe(r));
    REQUIRE(r.issues.size() == 1);
    CHECK(r.issues[0].problem.find("extended past its authentic end") != std::string::npos);
    CHECK(*r.issues[0].first_block == 9);
    CHECK(r.plaintext_size == 10 * kBlock);
    CHECK(CleanAndRead(a) == da);
  }
  SECTION("an append torn before its entries were written: the partial old end is found") {
    TestFile f;
    const Bytes old = Pattern(10 * kBlock + 100);
    Fill(f, old);
    const Bytes old_meta = f.mem.RawRead(MetaOffset(0), 4096);
    const Bytes old_end = f.mem.RawRead(DataOffset(10), 100);
    // The append's data pages reached the disk, its entries did not; block 10's data page
    // (merged with the append) was not rewritten either.
    REQUIRE(f.content->Write(Pattern(3 * kBlock, 11 * kBlock), 11 * kBlock).ok());
    f.mem.RawWrite(DataOffset(10), old_end);
    f.mem.RawWrite(MetaOffset(0), old_meta);
    const ContentReport r = Check(f, true);
    INFO(Describe(r));
    REQUIRE_FALSE(r.issues.empty());
    CHECK(r.issues[0].problem.find("FINAL with 100 bytes") != std::string::npos);
    CHECK(r.plaintext_size == old.size());
    CHECK(CleanAndRead(f) == old);
  }
}

TEST_CASE("fsck content: torn block writes read as damaged blocks and are zeroed", "[fsck]") {
  TestFile f;
  const Bytes old = Pattern(8 * kBlock);
  Fill(f, old);
  const Bytes old_page = f.mem.RawRead(DataOffset(3), kBlock);
  const Bytes old_entry = f.mem.RawRead(EntryOffset(3), 32);
  REQUIRE(f.content->Write(Pattern(kBlock, 0, 9), 3 * kBlock).ok());
  const Bytes new_page = f.mem.RawRead(DataOffset(3), kBlock);
  const Bytes new_entry = f.mem.RawRead(EntryOffset(3), 32);
  SECTION("half the new data page, old entry") {
    f.mem.RawWrite(DataOffset(3), ByteSpan(new_page.data(), 2048));
    f.mem.RawWrite(DataOffset(3) + 2048, ByteSpan(old_page.data() + 2048, 2048));
    f.mem.RawWrite(EntryOffset(3), old_entry);
  }
  SECTION("new data page, old entry") { f.mem.RawWrite(EntryOffset(3), old_entry); }
  SECTION("old data page, new entry") { f.mem.RawWrite(DataOffset(3), old_page); }
  (void)new_entry;
  const ContentReport r = Check(f, true);
  INFO(Describe(r));
  REQUIRE(r.issues.size() == 1);
  CHECK(*r.issues[0].first_block == 3);
  CHECK(*r.issues[0].last_block == 3);
  CHECK(CleanAndRead(f) == Zeroed(old, 3));
}

TEST_CASE("fsck content: impossible backing sizes are cut back to a consistent file", "[fsck]") {
  SECTION("ends right after group 1's metadata page") {
    TestFile f;
    const Bytes data = Pattern(129 * kBlock);
    Fill(f, data);
    f.mem.RawTruncate(DataOffset(128));
    const ContentReport r = Check(f, true);
    INFO(Describe(r));
    REQUIRE(r.issues.size() == 2);  // the size, then block 127 without FINAL
    CHECK(r.plaintext_size == 128 * kBlock);
    CHECK(CleanAndRead(f) == Bytes(data.begin(), data.begin() + 128 * kBlock));
  }
  SECTION("cut inside block 0's metadata page: reset to an empty file") {
    TestFile f;
    Fill(f, Pattern(3 * kBlock));
    f.mem.RawTruncate(4096 + 100);
    const ContentReport r = Check(f, true);
    REQUIRE(r.issues.size() == 1);
    CHECK(r.issues[0].action == "reset to an empty file");
    CHECK(CleanAndRead(f).empty());
  }
}

TEST_CASE("fsck content: contents under another key are not repairable and stay untouched",
          "[fsck]") {
  TestFile f(2, 7);
  Fill(f, Pattern(5 * kBlock));
  TestFile other(2, 8);  // same ids, another DEK: as if the header came from elsewhere
  other.mem.Restore(f.mem.Snapshot());
  const Bytes before = other.mem.Snapshot();
  const ContentReport r = Check(other, true);
  INFO(Describe(r));
  REQUIRE(r.issues.size() == 1);
  CHECK_FALSE(r.issues[0].repairable);
  CHECK(r.issues[0].problem.find("does not belong") != std::string::npos);
  CHECK(other.mem.Snapshot() == before);
}

}  // namespace
}  // namespace kmsfs::fs::fsck
