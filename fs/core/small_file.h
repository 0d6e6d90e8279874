// Small whole files in a backing directory (kmsfs.conf, kmsfs.dirid): read bounded, write atomically.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string_view>

#include "common/base/bytes.h"
#include "common/base/status.h"

namespace kmsfs::fs {

// Like PosixBackingFile, these are the OS edge of fs/core (STYLE.md §2 rule 5 names the
// exception): the FUSE layer holds backing directories as fds, and these few files are core's
// to format. `dirfd` may be an O_PATH descriptor. Names are never followed if they are symlinks.
// Errors are kIo with the errno, except as stated. Thread-safe (no shared state).

// The whole content of `name` in `dirfd`, which must be a regular file of at most `max_len`
// bytes. kNotFound if it does not exist; kCorrupt if it is larger or not a regular file.
Result<Bytes> ReadSmallFile(int dirfd, std::string_view name, size_t max_len);

// Creates `name` in `dirfd` with exactly `data` and `mode`, all or nothing: writes
// "<name>.tmp" (O_EXCL, a stale one from a crash is removed first), fsyncs it, renames it to
// `name` without replacing anything (RENAME_NOREPLACE where supported), then fsyncs the
// directory. kAlreadyExists if `name` exists. After a crash either the old state or the
// complete new file is visible, never a torn one.
Status WriteNewFileAtomically(int dirfd, std::string_view name, ByteSpan data, mode_t mode);

// fsync of the directory `dirfd` refers to (reopened with O_RDONLY, so O_PATH fds work).
Status SyncDirectory(int dirfd);

}  // namespace kmsfs::fs
