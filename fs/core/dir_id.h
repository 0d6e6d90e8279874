// Directory ids: reading and creating a backing directory's kmsfs.dirid (docs/format.md §8.1).
#pragma once

#include "common/base/status.h"
#include "common/format/ids.h"

namespace kmsfs::fs {

// Plain fd functions rather than an interface: the FUSE layer holds every backing directory as
// an fd (O_PATH is fine), and a dir id is one 16-byte file inside it. This is the documented
// exception to "fs/core does I/O only through an interface", like PosixBackingFile.
// Thread-safe.

// The id in `dirfd`'s kmsfs.dirid. kCorrupt if the file is missing (every directory has one),
// not a regular file, not exactly 16 bytes, or all zero (a torn write); kIo with errno otherwise.
Result<format::Id128> ReadDirId(int dirfd);

// Draws a fresh random id (never all zero) and stores it as kmsfs.dirid (mode 0400) in the
// directory `dirfd`, atomically and durably (file and directory fsynced) — before any entry is
// created in the directory. kAlreadyExists if the directory already has an id.
Result<format::Id128> CreateDirId(int dirfd);

}  // namespace kmsfs::fs
