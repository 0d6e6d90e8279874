// RunsInline: which raw FUSE requests the session loop's reader answers itself.
#include "fs/fuse/request_kind.h"

#include <linux/fuse.h>

#include <cstring>
#include <vector>

#include "tests/catch.h"

namespace kmsfs::fs {
namespace {

// A request as the kernel sends it: header, then `arg`.
template <class Arg>
std::vector<unsigned char> Request(uint32_t opcode, const Arg& arg) {
  std::vector<unsigned char> buf(sizeof(fuse_in_header) + sizeof(Arg));
  fuse_in_header in{};
  in.len = static_cast<uint32_t>(buf.size());
  in.opcode = opcode;
  in.unique = 7;
  in.nodeid = 1;
  std::memcpy(buf.data(), &in, sizeof(in));
  std::memcpy(buf.data() + sizeof(in), &arg, sizeof(arg));
  return buf;
}

struct Empty {
  uint64_t unused = 0;
};

bool Inline(const std::vector<unsigned char>& buf) { return RunsInline(buf.data(), buf.size()); }

TEST_CASE("request kind: lookups, attributes and xattrs are answered by the reader") {
  for (uint32_t op : {FUSE_LOOKUP, FUSE_GETATTR, FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_READLINK,
                      FUSE_FLUSH, FUSE_RELEASE, FUSE_OPENDIR, FUSE_READDIR, FUSE_READDIRPLUS,
                      FUSE_RELEASEDIR, FUSE_STATFS, FUSE_GETXATTR, FUSE_LISTXATTR, FUSE_SETXATTR,
                      FUSE_REMOVEXATTR, FUSE_INIT, FUSE_INTERRUPT}) {
    CAPTURE(op);
    CHECK(Inline(Request(op, Empty{})));
  }
}

TEST_CASE("request kind: anything that may ask keyd or sync goes to a worker") {
  for (uint32_t op : {FUSE_OPEN, FUSE_CREATE, FUSE_MKNOD, FUSE_MKDIR, FUSE_UNLINK, FUSE_RMDIR,
                      FUSE_RENAME, FUSE_RENAME2, FUSE_LINK, FUSE_SYMLINK, FUSE_FSYNC, FUSE_FSYNCDIR,
                      FUSE_FALLOCATE, FUSE_COPY_FILE_RANGE, FUSE_LSEEK}) {
    CAPTURE(op);
    CHECK_FALSE(Inline(Request(op, Empty{})));
  }
  CHECK_FALSE(Inline(Request(9999u, Empty{})));  // an opcode this build does not know
}

TEST_CASE("request kind: on a memory backing store the name operations that sync run inline") {
  for (uint32_t op : {FUSE_MKDIR, FUSE_SYMLINK, FUSE_UNLINK, FUSE_RMDIR, FUSE_RENAME, FUSE_RENAME2,
                      FUSE_LINK, FUSE_FSYNC, FUSE_FSYNCDIR}) {
    CAPTURE(op);
    const auto req = Request(op, Empty{});
    CHECK_FALSE(RunsInline(req.data(), req.size(), /*sync_is_free=*/false));
    CHECK(RunsInline(req.data(), req.size(), /*sync_is_free=*/true));
  }
  // What asks keyd, and large I/O, never does.
  for (uint32_t op : {FUSE_OPEN, FUSE_CREATE, FUSE_MKNOD, FUSE_FALLOCATE}) {
    CAPTURE(op);
    const auto req = Request(op, Empty{});
    CHECK_FALSE(RunsInline(req.data(), req.size(), /*sync_is_free=*/true));
  }
  fuse_write_in wr{};
  wr.size = 1u << 20;
  const auto big = Request(FUSE_WRITE, wr);
  CHECK_FALSE(RunsInline(big.data(), big.size(), /*sync_is_free=*/true));
}

TEST_CASE("request kind: small reads and writes inline, large ones to a worker") {
  fuse_read_in rd{};
  rd.size = 4096;
  CHECK(Inline(Request(FUSE_READ, rd)));
  rd.size = static_cast<uint32_t>(kInlineIoLimit);
  CHECK(Inline(Request(FUSE_READ, rd)));
  rd.size = static_cast<uint32_t>(kInlineIoLimit) + 1;
  CHECK_FALSE(Inline(Request(FUSE_READ, rd)));
  rd.size = 1u << 20;
  CHECK_FALSE(Inline(Request(FUSE_READ, rd)));

  fuse_write_in wr{};
  wr.size = 4096;
  CHECK(Inline(Request(FUSE_WRITE, wr)));
  wr.size = 1u << 20;
  CHECK_FALSE(Inline(Request(FUSE_WRITE, wr)));
}

TEST_CASE("request kind: a setattr that changes the size goes to a worker") {
  fuse_setattr_in sa{};
  sa.valid = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_ATIME | FATTR_MTIME;
  CHECK(Inline(Request(FUSE_SETATTR, sa)));
  sa.valid |= FATTR_SIZE;
  CHECK_FALSE(Inline(Request(FUSE_SETATTR, sa)));
  sa.valid = FATTR_SIZE | FATTR_FH;
  CHECK_FALSE(Inline(Request(FUSE_SETATTR, sa)));
}

TEST_CASE("request kind: truncated or missing input is never inline") {
  CHECK_FALSE(RunsInline(nullptr, 0));
  auto lookup = Request(FUSE_LOOKUP, Empty{});
  CHECK_FALSE(RunsInline(lookup.data(), sizeof(fuse_in_header) - 1));
  // A READ whose argument is cut off: its size cannot be read, so it is not trusted to be small.
  fuse_read_in rd{};
  rd.size = 4096;
  auto read = Request(FUSE_READ, rd);
  CHECK_FALSE(RunsInline(read.data(), sizeof(fuse_in_header) + 8));
  CHECK(RunsInline(read.data(), read.size()));
}

}  // namespace
}  // namespace kmsfs::fs
