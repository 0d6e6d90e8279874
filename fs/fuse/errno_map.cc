#include "fs/fuse/errno_map.h"

#include <cerrno>

#include "common/ipc/errors.h"

namespace kmsfs::fs {

int ErrnoFor(const Error& error) {
  if (error.code() == Code::kInvalidArgument && error.sys_errno() != 0) return error.sys_errno();
  const int err = ipc::ErrnoForError(error);
  // A kOk "error" is a bug in the caller; answering 0 would make the kernel wait for a reply
  // that never comes. EIO keeps the request moving.
  return err != 0 ? err : EIO;
}

}  // namespace kmsfs::fs
