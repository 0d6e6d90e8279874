// sys_util: small errno-to-Error and /proc/self/fd helpers shared by the fs/fuse operations.
#pragma once

#include <cerrno>
#include <cstdio>
#include <string>
#include <string_view>

#include "common/base/status.h"

namespace kmsfs::fs {

// An Error for a failed syscall that keeps the errno (kIo) — except ENOENT and EEXIST, which
// get their own codes so they are not logged as I/O failures (they are answers, not faults).
// `what` names the call, never a plaintext name.
inline Error SysError(std::string_view what, int err) {
  if (err == ENOENT) return Error(Code::kNotFound, std::string(what) + ": no such entry", ENOENT);
  if (err == EEXIST) return Error(Code::kAlreadyExists, std::string(what) + ": exists", EEXIST);
  return Error::FromErrno(what, err);
}

// An Error that answers exactly `err` (kIo keeps the errno; ErrnoFor gives it back).
inline Error Errno(int err, std::string_view what) { return SysError(what, err); }

// "/proc/self/fd/N": reaches the object behind an O_PATH fd for calls that have no *at form
// taking AT_EMPTY_PATH (chmod, utimensat, xattrs, reopen), as passthrough_hp does.
struct ProcPath {
  explicit ProcPath(int fd) { std::snprintf(buf, sizeof(buf), "/proc/self/fd/%d", fd); }
  const char* c_str() const { return buf; }
  char buf[32];
};

}  // namespace kmsfs::fs
