// RequestKind: which FUSE requests the session loop's reader thread answers itself.
#pragma once

#include <cstddef>

namespace kmsfs::fs {

// Largest READ or WRITE the reader answers itself. Bigger ones take long enough (sealing or
// opening up to 1 MiB) that a second request should not wait behind them, and the hand-off
// costs them little in proportion.
inline constexpr size_t kInlineIoLimit = 128 * 1024;

// True if the raw request `mem` (`size` bytes, starting with the kernel's fuse_in_header) is
// one the reader thread may run itself: it never asks keyd, never syncs the backing store, and
// is short (lookups, attributes, small reads and writes, xattrs, directory listing, release).
// False for everything else (open, create, mknod, mkdir, unlink, rmdir, rename, link, fsync,
// fallocate, truncate, large I/O, unknown opcodes, malformed input): those go to a worker.
// `sync_is_free`: the backing store keeps everything in memory (tmpfs, ramfs), so fsync and
// fdatasync return at once; then the name operations that sync but never ask keyd (mkdir,
// symlink, unlink, rmdir, rename, link) and fsync(dir) are short too and run inline.
bool RunsInline(const void* mem, size_t size, bool sync_is_free = false);

// True if the raw request `mem` is a WRITE, OPEN or CREATE on which the kernel asks the server to
// clear set-id bits (FUSE_WRITE_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID: kill_priv.h); false for
// anything else, including a request too short to hold the flag.
bool AsksToKillSuidGid(const void* mem, size_t size);

}  // namespace kmsfs::fs
