#include "fs/core/file_header_io.h"

#include <algorithm>
#include <cerrno>
#include <string>

#include "common/format/block_layout.h"
#include "common/format/file_header.h"
#include "fs/core/file_content.h"
#include "fs/core/open_file_table.h"
#include "tests/catch.h"
#include "tests/fakes/fake_data_key_source.h"
#include "tests/fakes/faulty_backing_file.h"
#include "tests/fakes/mem_backing_file.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs {
namespace {

using fakes::FakeDataKeySource;
using fakes::MemBackingFile;
using testing::TempDir;

const Requester kAlice{1000, 1000, 4242, "/alice/notes.txt"};
// The directory entry the test files are created under (format.md §6.2).
const LinkName kLink{format::Id128{1, 2, 3}, "bmFtZS1vbmUtZm9yLXRlc3Rz"};
const LinkName kOtherName{format::Id128{1, 2, 3}, "b3RoZXItbmFtZS1mb3ItdGVzdA"};
const LinkName kOtherDir{format::Id128{9, 9, 9}, "bmFtZS1vbmUtZm9yLXRlc3Rz"};

struct VolumeFixture {
  VolumeFixture() {
    auto v = Volume::Create(dir.path(), FakeDataKeySource::kAlias, &keys, Requester{});
    KMSFS_CHECK(v.ok());
    volume = std::move(v).value();
  }
  TempDir dir;
  FakeDataKeySource keys;
  std::unique_ptr<Volume> volume;
};

std::unique_ptr<FileContent> ContentFor(const Volume& v, const FileKey& key, BackingFile* b) {
  return FileContent::Open(v.id(), key.file_id, key.dek, b).value();
}

TEST_CASE("CreateFile writes a header and an empty file; OpenFileKey unwraps it", "[fs][header]") {
  VolumeFixture fx;
  MemBackingFile mem;
  auto created = CreateFile(&mem, *fx.volume, &fx.keys, kAlice, &kLink);
  REQUIRE(created.ok());
  CHECK(mem.RawSize() == format::kMinBackingSize);
  CHECK(created->dek.size() == 32);
  CHECK(fx.keys.last_context() == fx.volume->FileContext(created->file_id));
  CHECK(fx.keys.last_requester().path == kAlice.path);
  auto header = format::ParseFileHeader(mem.RawRead(0, 4096));
  REQUIRE(header.ok());
  CHECK(header->file_id == created->file_id);

  auto opened = OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice);
  REQUIRE(opened.ok());
  CHECK(opened->file_id == created->file_id);
  CHECK(crypto::ConstantTimeEqual(opened->dek.span(), created->dek.span()));
  CHECK(ContentFor(*fx.volume, *opened, &mem)->Size().value() == 0);

  SECTION("content written under the created key reads under the opened one") {
    REQUIRE(ContentFor(*fx.volume, *created, &mem)->Write(AsBytes("secret"), 0).ok());
    Bytes buf(6);
    CHECK(ContentFor(*fx.volume, *opened, &mem)->Read(buf, 0).value() == 6);
    CHECK(buf == Bytes{'s', 'e', 'c', 'r', 'e', 't'});
  }
  SECTION("every open asks the key source, so policy applies at once") {
    const int before = fx.keys.decrypt_calls();
    REQUIRE(OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).ok());
    CHECK(fx.keys.decrypt_calls() == before + 1);
    fx.keys.DenyPath(kAlice.path);
    CHECK(OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).error().code() ==
          Code::kPermissionDenied);
    fx.keys.AllowAll();
    fx.keys.SetDisabled(true);
    CHECK(OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).error().code() == Code::kKeyUnavailable);
    fx.keys.SetDisabled(false);
    fx.keys.SetUnavailable(true);
    CHECK(OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).error().code() == Code::kUnavailable);
  }
  SECTION("CreateFile needs an empty backing file and writes nothing if denied") {
    CHECK(CreateFile(&mem, *fx.volume, &fx.keys, kAlice, &kLink).error().code() ==
          Code::kFailedPrecondition);
    MemBackingFile fresh;
    fx.keys.DenyPath(kAlice.path);
    CHECK(CreateFile(&fresh, *fx.volume, &fx.keys, kAlice, &kLink).error().code() ==
          Code::kPermissionDenied);
    CHECK(fresh.RawSize() == 0);
  }
}

TEST_CASE("a tampered header never unwraps", "[fs][header][tamper]") {
  VolumeFixture fx;
  MemBackingFile mem;
  REQUIRE(CreateFile(&mem, *fx.volume, &fx.keys, kAlice, &kLink).ok());
  const Bytes original = mem.Snapshot();

  SECTION("every byte of the header page") {
    const format::Id128 file_id = OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).value().file_id;
    for (size_t i = 0; i < 4096; ++i) {
      CAPTURE(i);
      mem.Restore(original);
      Bytes b = mem.RawRead(i, 1);
      b[0] ^= 0x04;
      mem.RawWrite(i, b);
      auto r = OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice);
      if (i < format::FileHeader::kKeyRegionSize) {
        // The key region: magic .. wrapped DEK and its padding.
        REQUIRE_FALSE(r.ok());
        REQUIRE(r.error().code() == Code::kCorrupt);
      } else if (!r.ok()) {
        // A link slot: a damaged slot reads as torn, and the other slot's set applies; with no
        // link check asked for (no `via`), the key still unwraps. Never anything else.
        REQUIRE(r.error().code() == Code::kCorrupt);
      } else {
        REQUIRE(r->file_id == file_id);
      }
    }
  }
  SECTION("cut inside the header") {
    mem.RawTruncate(4095);
    CHECK(OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).error().code() == Code::kCorrupt);
    mem.RawTruncate(0);
    CHECK(OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).error().code() == Code::kCorrupt);
  }
  SECTION("a header from another volume") {
    VolumeFixture other;
    MemBackingFile theirs;
    REQUIRE(CreateFile(&theirs, *other.volume, &fx.keys, kAlice, &kLink).ok());
    mem.RawWrite(0, theirs.RawRead(0, 4096));
    CHECK(OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).error().code() == Code::kCorrupt);
  }
  SECTION("another file's header over this file's blocks") {
    REQUIRE(ContentFor(*fx.volume, OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).value(), &mem)
                ->Write(testing::Pattern(9000), 0)
                .ok());
    MemBackingFile theirs;
    REQUIRE(CreateFile(&theirs, *fx.volume, &fx.keys, kAlice, &kLink).ok());
    mem.RawWrite(0, theirs.RawRead(0, 4096));
    auto key = OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice);
    REQUIRE(key.ok());  // the header is genuine...
    Bytes buf(9000);
    CHECK(ContentFor(*fx.volume, *key, &mem)->Read(buf, 0).error().code() ==
          Code::kCorrupt);  // ...but the blocks are bound to the other file id and DEK
  }
}

TEST_CASE("OpenFileTable shares one state per inode and wipes it on last release",
          "[fs][openfile]") {
  VolumeFixture fx;
  auto mem = std::make_unique<MemBackingFile>();
  MemBackingFile* raw = mem.get();
  REQUIRE(CreateFile(raw, *fx.volume, &fx.keys, kAlice, &kLink).ok());
  OpenFileTable table(fx.volume->id());

  auto first =
      table.Acquire(7, std::move(mem), OpenFileKey(raw, *fx.volume, &fx.keys, kAlice).value());
  REQUIRE(first.ok());
  REQUIRE((*first)->content().Write(AsBytes("hello"), 0).ok());
  CHECK(table.open_inodes() == 1);

  // A second open asks keyd again and shares the state (same FileContent, same lock).
  const int decrypts = fx.keys.decrypt_calls();
  auto second = table.Acquire(7, std::make_unique<MemBackingFile>(),
                              OpenFileKey(raw, *fx.volume, &fx.keys, kAlice).value());
  REQUIRE(second.ok());
  CHECK(fx.keys.decrypt_calls() == decrypts + 1);
  CHECK(second->get() == first->get());
  CHECK((*second)->content().Size().value() == 5);

  SECTION("a key that is not the open file's is refused") {
    FileKey wrong;
    wrong.file_id = (*first)->file_id();
    wrong.dek = testing::DekFromSeed(99);
    CHECK(table.Acquire(7, std::make_unique<MemBackingFile>(), std::move(wrong)).error().code() ==
          Code::kCorrupt);
    FileKey other_id = OpenFileKey(raw, *fx.volume, &fx.keys, kAlice).value();
    other_id.file_id[0] ^= 1;
    CHECK(
        table.Acquire(7, std::make_unique<MemBackingFile>(), std::move(other_id)).error().code() ==
        Code::kCorrupt);
  }
  SECTION("a denied open fails while existing handles keep working") {
    fx.keys.DenyPath(kAlice.path);
    CHECK_FALSE(OpenFileKey(raw, *fx.volume, &fx.keys, kAlice).ok());
    CHECK((*first)->content().Size().value() == 5);
  }
  SECTION("released twice: gone; a reference taken before stays usable") {
    std::shared_ptr<OpenFile> held = *first;
    table.Release(7);
    CHECK(table.Find(7) != nullptr);
    table.Release(7);
    CHECK(table.Find(7) == nullptr);
    CHECK(table.open_inodes() == 0);
    CHECK(held->content().Size().value() == 5);
  }
}

Code OpenVia(MemBackingFile* mem, VolumeFixture& fx, const LinkName& via) {
  auto r = OpenFileKey(mem, *fx.volume, &fx.keys, kAlice, &via);
  return r.ok() ? Code::kOk : r.error().code();
}

TEST_CASE("link tags: an open must come through a name the header lists", "[fs][header][links]") {
  VolumeFixture fx;
  REQUIRE(fx.volume->links_enabled());  // kmsfs init writes feature header-links
  MemBackingFile mem;
  REQUIRE(CreateFile(&mem, *fx.volume, &fx.keys, kAlice, &kLink).ok());
  CHECK(OpenVia(&mem, fx, kLink) == Code::kOk);
  const int decrypts = fx.keys.decrypt_calls();
  CHECK(OpenVia(&mem, fx, kOtherName) == Code::kCorrupt);
  CHECK(OpenVia(&mem, fx, kOtherDir) == Code::kCorrupt);
  CHECK(fx.keys.decrypt_calls() == decrypts);  // refused before keyd is asked
  CHECK(HasLink(&mem, *fx.volume, kLink).value());
  CHECK_FALSE(HasLink(&mem, *fx.volume, kOtherName).value());
  // A volume's files need their first link.
  MemBackingFile nameless;
  CHECK(CreateFile(&nameless, *fx.volume, &fx.keys, kAlice).error().code() ==
        Code::kInvalidArgument);

  SECTION("a whole file copied over another: the copy does not open under the other's name") {
    MemBackingFile victim;
    REQUIRE(CreateFile(&victim, *fx.volume, &fx.keys, kAlice, &kOtherName).ok());
    victim.Restore(mem.Snapshot());
    CHECK(OpenVia(&victim, fx, kOtherName) == Code::kCorrupt);
  }
  SECTION("the link key is the volume's: another volume's tags do not count") {
    VolumeFixture other;
    MemBackingFile theirs;
    REQUIRE(CreateFile(&theirs, *other.volume, &fx.keys, kAlice, &kLink).ok());
    CHECK_FALSE(HasLink(&theirs, *fx.volume, kLink).value());
  }
}

TEST_CASE("link tags: a crash between the steps of a rename leaves the file readable",
          "[fs][header][links]") {
  VolumeFixture fx;
  MemBackingFile mem;
  REQUIRE(CreateFile(&mem, *fx.volume, &fx.keys, kAlice, &kLink).ok());
  const Bytes before = mem.Snapshot();
  const Bytes key_region = mem.RawRead(0, format::FileHeader::kKeyRegionSize);

  // Step 1 of rename(kLink -> kOtherName): the new tag, synced, before the backing rename.
  bool added = false;
  REQUIRE(UpdateLinks(&mem, *fx.volume, &kOtherName, nullptr, /*sync=*/true,
                      format::FileHeader::kMaxLinkTags, &added)
              .ok());
  CHECK(added);
  const Bytes after_add = mem.Snapshot();
  // A crash here (before or after the backing rename): both names open.
  CHECK(OpenVia(&mem, fx, kLink) == Code::kOk);
  CHECK(OpenVia(&mem, fx, kOtherName) == Code::kOk);
  // Step 3: the old tag goes after the backing rename.
  REQUIRE(UpdateLinks(&mem, *fx.volume, nullptr, &kLink, /*sync=*/false).ok());
  CHECK(OpenVia(&mem, fx, kLink) == Code::kCorrupt);
  CHECK(OpenVia(&mem, fx, kOtherName) == Code::kOk);
  CHECK(mem.RawRead(0, format::FileHeader::kKeyRegionSize) == key_region);  // never rewritten
  // Nothing to do is no write at all.
  added = true;
  REQUIRE(UpdateLinks(&mem, *fx.volume, &kOtherName, &kLink, true, 64, &added).ok());
  CHECK_FALSE(added);

  SECTION("step 1 torn at any sector: the old name still opens") {
    mem.Restore(before);
    auto header = format::ParseFileHeader(mem.RawRead(0, 4096)).value();
    const Bytes add_write = [&] {
      MemBackingFile scratch;
      scratch.Restore(before);
      REQUIRE(UpdateLinks(&scratch, *fx.volume, &kOtherName, nullptr, false).ok());
      return scratch.RawRead(0, 4096);
    }();
    const size_t slot = format::FileHeader::kSlotOffset[1 - header.active_slot];
    for (size_t cut = 0; cut < format::FileHeader::kSlotSize; cut += 512) {
      CAPTURE(cut);
      mem.Restore(before);
      // Only the sectors before `cut` reached the disk; then, the ones after it instead.
      mem.RawWrite(slot, ByteSpan(add_write).subspan(slot, cut));
      CHECK(OpenVia(&mem, fx, kLink) == Code::kOk);
      mem.Restore(before);
      mem.RawWrite(slot + cut,
                   ByteSpan(add_write).subspan(slot + cut, format::FileHeader::kSlotSize - cut));
      CHECK(OpenVia(&mem, fx, kLink) == Code::kOk);
    }
  }
  SECTION("step 3 torn: the file opens under the new name (and the stale old one)") {
    const Bytes removed = mem.Snapshot();
    auto header = format::ParseFileHeader(ByteSpan(after_add).first(4096)).value();
    const size_t slot = format::FileHeader::kSlotOffset[1 - header.active_slot];
    mem.Restore(after_add);
    mem.RawWrite(slot, ByteSpan(removed).subspan(slot, 512));
    CHECK(OpenVia(&mem, fx, kOtherName) == Code::kOk);
    CHECK(OpenVia(&mem, fx, kLink) == Code::kOk);  // the documented stale tag
  }
}

// True if the tag of `name` appears anywhere in the header page's link slots, in force or not.
bool AnySlotHolds(const MemBackingFile& mem, VolumeFixture& fx, const LinkName& name) {
  const Bytes page = mem.RawRead(0, format::FileHeader::kSize);
  const auto header = format::ParseFileHeader(page);
  REQUIRE(header.ok());
  const format::LinkTag tag =
      fx.volume->LinkTagFor(header->file_id, name.dir_id, name.backing_name).value();
  const auto slots = page.begin() + format::FileHeader::kKeyRegionSize;
  return std::search(slots, page.end(), tag.begin(), tag.end()) != page.end();
}

TEST_CASE("link tags: no superseded tag stays in either slot after rename or unlink",
          "[fs][header][links]") {
  VolumeFixture fx;
  MemBackingFile mem;
  REQUIRE(CreateFile(&mem, *fx.volume, &fx.keys, kAlice, &kLink).ok());
  SECTION("rename kLink -> kOtherName") {
    REQUIRE(UpdateLinks(&mem, *fx.volume, &kOtherName, nullptr, /*sync=*/true).ok());
    REQUIRE(UpdateLinks(&mem, *fx.volume, nullptr, &kLink, /*sync=*/false).ok());
    CHECK_FALSE(AnySlotHolds(mem, fx, kLink));
    CHECK(AnySlotHolds(mem, fx, kOtherName));
    CHECK(OpenVia(&mem, fx, kOtherName) == Code::kOk);
    CHECK(OpenVia(&mem, fx, kLink) == Code::kCorrupt);
    // The attack of the review: the superseded slot (with both tags) is gone, so there is
    // nothing to bump the seq of. The slot not in force is all zero.
    const auto header = format::ParseFileHeader(mem.RawRead(0, 4096)).value();
    CHECK(std::all_of(header.other_slot.begin(), header.other_slot.end(),
                      [](uint8_t b) { return b == 0; }));
  }
  SECTION("unlink of one of two names") {
    REQUIRE(UpdateLinks(&mem, *fx.volume, &kOtherDir, nullptr, /*sync=*/true).ok());
    REQUIRE(UpdateLinks(&mem, *fx.volume, nullptr, &kLink, /*sync=*/false).ok());
    CHECK_FALSE(AnySlotHolds(mem, fx, kLink));
    CHECK(OpenVia(&mem, fx, kOtherDir) == Code::kOk);
  }
  SECTION("every link change syncs the new slot before the old one is zeroed") {
    mem.ResetCounters();
    REQUIRE(UpdateLinks(&mem, *fx.volume, nullptr, nullptr, false).ok());
    CHECK(mem.write_calls() == 0);
    REQUIRE(UpdateLinks(&mem, *fx.volume, &kOtherName, nullptr, /*sync=*/false).ok());
    CHECK(mem.write_calls() == 2);  // the new slot, then the zeros
    CHECK(mem.sync_calls() == 1);   // between the two
  }
}

TEST_CASE("link tags: a crash after any write of a rename leaves the name in use readable",
          "[fs][header][links]") {
  VolumeFixture fx;
  MemBackingFile mem;
  REQUIRE(CreateFile(&mem, *fx.volume, &fx.keys, kAlice, &kLink).ok());
  // Each step writes twice: the new slot, and (after an fdatasync) the zeroing of the old one.
  // A crash stops the writes after `ok` of them; the failing one stores half its bytes (a torn
  // write) or none. Runs one step from `start` that way and returns its status.
  auto crash_after = [&](const Bytes& start, uint64_t ok, bool torn, const LinkName* add,
                         const LinkName* remove, bool sync) {
    mem.Restore(start);
    fakes::FaultyBackingFile faulty(&mem);
    faulty.FailWritesAfter(ok, EIO, torn);
    return UpdateLinks(&faulty, *fx.volume, add, remove, sync);
  };
  const Bytes before = mem.Snapshot();
  for (const bool torn : {false, true}) {
    for (uint64_t ok = 0; ok <= 2; ++ok) {
      CAPTURE(torn, ok);
      // Step 1: the new tag, synced, before the backing rename: the old name is in use.
      CHECK(crash_after(before, ok, torn, &kOtherName, nullptr, true).ok() == (ok == 2));
      CHECK(OpenVia(&mem, fx, kLink) == Code::kOk);
      if (ok >= 1) CHECK(OpenVia(&mem, fx, kOtherName) == Code::kOk);  // the new slot landed
    }
  }
  REQUIRE(UpdateLinks(&mem, *fx.volume, &kOtherName, nullptr, /*sync=*/true).ok());
  const Bytes added = mem.Snapshot();
  for (const bool torn : {false, true}) {
    for (uint64_t ok = 0; ok <= 2; ++ok) {
      CAPTURE(torn, ok);
      // Step 3, after the backing rename (the new name is in use): the old tag goes.
      CHECK(crash_after(added, ok, torn, nullptr, &kLink, false).ok() == (ok == 2));
      CHECK(OpenVia(&mem, fx, kOtherName) == Code::kOk);
      // The stale old tag survives only a crash before the zeroing completed.
      if (ok == 2) CHECK_FALSE(AnySlotHolds(mem, fx, kLink));
    }
  }
}

TEST_CASE("link tags: at most kMaxHardLinks names per link()", "[fs][header][links]") {
  VolumeFixture fx;
  MemBackingFile mem;
  REQUIRE(CreateFile(&mem, *fx.volume, &fx.keys, kAlice, &kLink).ok());
  for (size_t i = 1; i < kMaxHardLinks; ++i) {
    const LinkName n{kLink.dir_id, "link" + std::to_string(i)};
    REQUIRE(UpdateLinks(&mem, *fx.volume, &n, nullptr, false, kMaxHardLinks).ok());
  }
  const LinkName one_more{kLink.dir_id, "one-more"};
  auto st = UpdateLinks(&mem, *fx.volume, &one_more, nullptr, false, kMaxHardLinks);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().sys_errno() == EMLINK);
  // A rename may still add its new name for a moment (the slot holds 95).
  CHECK(UpdateLinks(&mem, *fx.volume, &one_more, nullptr, false).ok());
  for (size_t i = 1; i < kMaxHardLinks; ++i) {
    CHECK(OpenVia(&mem, fx, LinkName{kLink.dir_id, "link" + std::to_string(i)}) == Code::kOk);
  }
}

}  // namespace
}  // namespace kmsfs::fs
