#include "fs/fuse/errno_map.h"

#include <cerrno>

#include "common/ipc/errors.h"

namespace kmsfs::fs {

int ErrnoFor(const Error& error) {
  const int err = ipc::ErrnoForError(error);
  return err != 0 ? err : EIO;  // a kOk "error" is a caller bug: fail the request, loudly enough
}

}  // namespace kmsfs::fs
