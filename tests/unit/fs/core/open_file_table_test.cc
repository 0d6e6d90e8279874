#include "fs/core/open_file_table.h"

#include <memory>
#include <utility>

#include "tests/catch.h"
#include "tests/fakes/mem_backing_file.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs {
namespace {

using testing::DekFromSeed;
using testing::IdFromSeed;
using testing::Pattern;

FileKey KeyOf(uint8_t file_seed, uint8_t key_seed) {
  FileKey k;
  k.file_id = IdFromSeed(file_seed);
  k.dek = DekFromSeed(key_seed);
  return k;
}

// An OpenFile over an in-memory backing file holding a stand-in header page and the empty
// file's metadata. `mem` is owned by the OpenFile; the raw pointer stays valid with it.
std::unique_ptr<OpenFile> MakeOpenFile(fakes::MemBackingFile** mem_out) {
  auto mem = std::make_unique<fakes::MemBackingFile>();
  mem->RawWrite(0, Bytes(format::kHeaderPageSize, 0x48));
  *mem_out = mem.get();
  auto file = OpenFile::Create(IdFromSeed(1), std::move(mem), KeyOf(2, 7));
  REQUIRE(file.ok());
  REQUIRE((*file)->content().InitializeEmpty().ok());
  return std::move(file).value();
}

TEST_CASE("OpenFile: a wiped key stops content access and a granted key restores it",
          "[fs][open_file][revoke]") {
  fakes::MemBackingFile* mem = nullptr;
  auto file = MakeOpenFile(&mem);
  const Bytes data = Pattern(10000, 0, 3);
  REQUIRE(file->content().Write(data, 0).ok());
  REQUIRE(file->has_key());
  REQUIRE(file->Content().ok());

  file->WipeKey();
  CHECK_FALSE(file->has_key());
  auto denied = file->Content();
  REQUIRE_FALSE(denied.ok());
  CHECK(denied.error().code() == Code::kKeyUnavailable);
  file->WipeKey();  // idempotent
  CHECK_FALSE(file->has_key());
  // The backing file stays open: the state can be restored without a new open.
  CHECK(mem->RawRead(0, 1)[0] == 0x48);

  SECTION("another file's key is refused and the state stays wiped") {
    Status st = file->RestoreKey(KeyOf(3, 7));
    REQUIRE_FALSE(st.ok());
    CHECK(st.code() == Code::kCorrupt);
    CHECK_FALSE(file->has_key());
  }
  SECTION("the file's key brings the content back, byte for byte") {
    REQUIRE(file->RestoreKey(KeyOf(2, 7)).ok());
    REQUIRE(file->has_key());
    Bytes out(data.size());
    auto n = file->content().Read(out, 0);
    REQUIRE(n.ok());
    CHECK(*n == data.size());
    CHECK(out == data);
  }
  SECTION("a different DEK under the file's own id is refused (a replaced header)") {
    Status st = file->RestoreKey(KeyOf(2, 8));
    REQUIRE_FALSE(st.ok());
    CHECK(st.code() == Code::kCorrupt);
    CHECK_FALSE(file->has_key());
  }
}

TEST_CASE("OpenFile: RestoreKey on a live key accepts only the same key", "[fs][open_file]") {
  fakes::MemBackingFile* mem = nullptr;
  auto file = MakeOpenFile(&mem);
  CHECK(file->RestoreKey(KeyOf(2, 7)).ok());
  CHECK(file->has_key());
  Status other = file->RestoreKey(KeyOf(2, 9));
  REQUIRE_FALSE(other.ok());
  CHECK(other.code() == Code::kCorrupt);
  CHECK(file->has_key());
  CHECK(file->SameKey(KeyOf(2, 7)));
  CHECK_FALSE(file->SameKey(KeyOf(2, 9)));
  CHECK_FALSE(file->SameKey(KeyOf(4, 7)));
  file->WipeKey();
  // Without the DEK, the key check value still tells the file's key from another.
  CHECK(file->SameKey(KeyOf(2, 7)));
  CHECK_FALSE(file->SameKey(KeyOf(2, 9)));
  CHECK_FALSE(file->SameKey(KeyOf(4, 7)));
}

}  // namespace
}  // namespace kmsfs::fs
