#include "fs/core/posix_backing_file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "fs/core/file_content.h"
#include "tests/catch.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs {
namespace {

// A temporary file, removed on destruction.
struct TempFile {
  TempFile() {
    char tmpl[] = "/tmp/kmsfs-backing-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    KMSFS_CHECK(fd >= 0);
    ::close(fd);
    path = tmpl;
  }
  ~TempFile() { ::unlink(path.c_str()); }
  UniqueFd Open(int flags) const { return UniqueFd(::open(path.c_str(), flags | O_CLOEXEC)); }
  std::string path;
};

TEST_CASE("PosixBackingFile reads, writes, sizes, truncates and syncs", "[fs][posix]") {
  TempFile tmp;
  PosixBackingFile f(tmp.Open(O_RDWR));
  const Bytes data = testing::Pattern(10000);
  REQUIRE(f.PWrite(data, 5000).ok());
  CHECK(f.Size().value() == 15000);
  Bytes buf(20000);
  CHECK(f.PRead(buf, 0).value() == 15000);  // short only at end of file
  CHECK(std::equal(data.begin(), data.end(), buf.begin() + 5000));
  CHECK(Bytes(buf.begin(), buf.begin() + 5000) == Bytes(5000, 0));
  CHECK(f.PRead(buf, 20000).value() == 0);
  REQUIRE(f.Truncate(100).ok());
  CHECK(f.Size().value() == 100);
  CHECK(f.Sync(true).ok());
  CHECK(f.Sync(false).ok());
  CHECK(f.PWrite(data, uint64_t{1} << 63).code() == Code::kInvalidArgument);
  CHECK(f.PRead(buf, UINT64_MAX).error().code() == Code::kInvalidArgument);
}

TEST_CASE("PosixBackingFile keeps the OS errno", "[fs][posix]") {
  TempFile tmp;
  PosixBackingFile ro(tmp.Open(O_RDONLY));
  Status st = ro.PWrite(AsBytes("x"), 0);
  REQUIRE(st.code() == Code::kIo);
  CHECK(st.error().sys_errno() == EBADF);
  CHECK(ro.Truncate(10).error().sys_errno() == EINVAL);  // ftruncate on a read-only fd
}

TEST_CASE("FileContent over a real file", "[fs][posix][content]") {
  TempFile tmp;
  PosixBackingFile f(tmp.Open(O_RDWR));
  REQUIRE(f.PWrite(Bytes(4096, 0x48), 0).ok());
  auto fc = FileContent::Open(testing::IdFromSeed(1), testing::IdFromSeed(2),
                              testing::DekFromSeed(3), &f);
  REQUIRE(fc.ok());
  REQUIRE((*fc)->InitializeEmpty().ok());
  const Bytes data = testing::Pattern(700000);
  REQUIRE((*fc)->Write(data, 123).ok());
  REQUIRE((*fc)->Truncate(600000).ok());
  Bytes back(600000);
  REQUIRE((*fc)->Read(back, 0).value() == 600000);
  CHECK(Bytes(back.begin(), back.begin() + 123) == Bytes(123, 0));
  CHECK(std::equal(back.begin() + 123, back.end(), data.begin()));
  CHECK(f.Size().value() == format::BackingSizeForPlaintextSize(600000).value());
}

}  // namespace
}  // namespace kmsfs::fs
