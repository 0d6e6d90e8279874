// RequestKind: classifies raw requests by the kernel's own header layout (<linux/fuse.h>), read
// before libfuse parses them. Kept apart from the libfuse headers, which define some of the
// same names.
#include "fs/fuse/request_kind.h"

#include <linux/fuse.h>

#include <cstring>

namespace kmsfs::fs {
namespace {

// The argument struct that follows the header, if the request is long enough to hold it.
template <class Arg>
bool ArgOf(const void* mem, size_t size, Arg* out) {
  // Only the first 24 bytes of an argument are ever read here (FUSE_WRITE's argument is that
  // short for protocol minors below 9), so only they must be present.
  constexpr size_t kLen = sizeof(Arg) < 24 ? sizeof(Arg) : 24;
  if (size < sizeof(fuse_in_header) + kLen) return false;
  std::memset(out, 0, sizeof(Arg));
  std::memcpy(out, static_cast<const char*>(mem) + sizeof(fuse_in_header), kLen);
  return true;
}

}  // namespace

bool RunsInline(const void* mem, size_t size, bool sync_is_free) {
  if (mem == nullptr || size < sizeof(fuse_in_header)) return false;
  fuse_in_header in;
  std::memcpy(&in, mem, sizeof(in));
  switch (in.opcode) {
    case FUSE_INIT:
    case FUSE_DESTROY:
    case FUSE_INTERRUPT:
    case FUSE_LOOKUP:
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
    case FUSE_GETATTR:
    case FUSE_READLINK:
    case FUSE_FLUSH:
    case FUSE_RELEASE:
    case FUSE_OPENDIR:
    case FUSE_READDIR:
    case FUSE_READDIRPLUS:
    case FUSE_RELEASEDIR:
    case FUSE_STATFS:
    case FUSE_ACCESS:
    case FUSE_GETXATTR:
    case FUSE_LISTXATTR:
    case FUSE_SETXATTR:
    case FUSE_REMOVEXATTR:
      return true;
    case FUSE_READ: {
      fuse_read_in arg;
      return ArgOf(mem, size, &arg) && arg.size <= kInlineIoLimit;
    }
    case FUSE_WRITE: {
      fuse_write_in arg;
      return ArgOf(mem, size, &arg) && arg.size <= kInlineIoLimit;
    }
    case FUSE_SETATTR: {
      // chmod, chown and utimes are one syscall each; a size change is a truncate, which may
      // ask keyd (truncate by path) and rewrite metadata.
      fuse_setattr_in arg;
      return ArgOf(mem, size, &arg) && (arg.valid & FATTR_SIZE) == 0;
    }
    case FUSE_MKDIR:
    case FUSE_SYMLINK:
    case FUSE_UNLINK:
    case FUSE_RMDIR:
    case FUSE_RENAME:
    case FUSE_RENAME2:
    case FUSE_LINK:
    case FUSE_FSYNC:
    case FUSE_FSYNCDIR:
      // Each syncs (link slots, dir ids, long-name side files, the caller's fsync): a disk
      // takes milliseconds, during which the reader must not stall everyone else.
      return sync_is_free;
    default:
      return false;
  }
}

bool AsksToKillSuidGid(const void* mem, size_t size) {
  if (mem == nullptr || size < sizeof(fuse_in_header)) return false;
  fuse_in_header in;
  std::memcpy(&in, mem, sizeof(in));
  switch (in.opcode) {
    case FUSE_WRITE: {
      fuse_write_in arg;
      return ArgOf(mem, size, &arg) && (arg.write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
    }
    case FUSE_OPEN: {
      fuse_open_in arg;
      return ArgOf(mem, size, &arg) && (arg.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
    }
    case FUSE_CREATE: {  // O_CREAT|O_TRUNC that finds the file there after all
      fuse_create_in arg;
      return ArgOf(mem, size, &arg) && (arg.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
    }
    default:
      return false;
  }
}

}  // namespace kmsfs::fs
