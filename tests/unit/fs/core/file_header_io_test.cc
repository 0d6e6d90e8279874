#include "fs/core/file_header_io.h"

#include <string>

#include "common/format/block_layout.h"
#include "common/format/file_header.h"
#include "fs/core/file_content.h"
#include "fs/core/open_file_table.h"
#include "tests/catch.h"
#include "tests/fakes/fake_data_key_source.h"
#include "tests/fakes/mem_backing_file.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs {
namespace {

using fakes::FakeDataKeySource;
using fakes::MemBackingFile;
using testing::TempDir;

const Requester kAlice{1000, 1000, 4242, "/alice/notes.txt"};

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
  auto created = CreateFile(&mem, *fx.volume, &fx.keys, kAlice);
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
    CHECK(CreateFile(&mem, *fx.volume, &fx.keys, kAlice).error().code() ==
          Code::kFailedPrecondition);
    MemBackingFile fresh;
    fx.keys.DenyPath(kAlice.path);
    CHECK(CreateFile(&fresh, *fx.volume, &fx.keys, kAlice).error().code() ==
          Code::kPermissionDenied);
    CHECK(fresh.RawSize() == 0);
  }
}

TEST_CASE("a tampered header never unwraps", "[fs][header][tamper]") {
  VolumeFixture fx;
  MemBackingFile mem;
  REQUIRE(CreateFile(&mem, *fx.volume, &fx.keys, kAlice).ok());
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
    REQUIRE(CreateFile(&theirs, *other.volume, &fx.keys, kAlice).ok());
    mem.RawWrite(0, theirs.RawRead(0, 4096));
    CHECK(OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).error().code() == Code::kCorrupt);
  }
  SECTION("another file's header over this file's blocks") {
    REQUIRE(ContentFor(*fx.volume, OpenFileKey(&mem, *fx.volume, &fx.keys, kAlice).value(), &mem)
                ->Write(testing::Pattern(9000), 0)
                .ok());
    MemBackingFile theirs;
    REQUIRE(CreateFile(&theirs, *fx.volume, &fx.keys, kAlice).ok());
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
  REQUIRE(CreateFile(raw, *fx.volume, &fx.keys, kAlice).ok());
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

}  // namespace
}  // namespace kmsfs::fs
