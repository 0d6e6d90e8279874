// Reencrypt: gives files in a mounted kmsfs volume fresh DEKs by copying each through the mount
// into a new file beside it and renaming that over the original (one atomic rename).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "common/base/unique_fd.h"

namespace kmsfs::fs::lifecycle {

// Temporary copies are named kReencryptTempPrefix + 16 hex digits, in the file's directory.
inline constexpr char kReencryptTempPrefix[] = ".kmsfs-reencrypt-";

// kInvalidArgument unless `path` (after realpath) lies on a mounted kmsfs volume
// (/proc/self/mountinfo type fuse.kmsfs). Returns the mount point.
Result<std::string> KmsfsMountOf(const std::string& path);

// Opens directory `dir` for reading without following a symlink in any component (each is
// opened relative to the previous one with O_NOFOLLOW; a symlink is refused with
// kInvalidArgument) and checks that the directory it got lies on a mounted kmsfs volume (its
// st_dev is a fuse.kmsfs mount's in /proc/self/mountinfo). Callers then act only through *at()
// calls on this fd, so a path changed meanwhile (a directory swapped for a symlink) cannot
// redirect them elsewhere.
Result<UniqueFd> OpenKmsfsDirNoFollow(const std::string& dir);

// Removes leftover temporary copies (kReencryptTempPrefix*) from `dir` (opened with
// OpenKmsfsDirNoFollow, removed with unlinkat relative to it): what a killed run left.
// Returns how many were removed. Never touches anything else.
Result<uint64_t> RemoveStaleTemps(const std::string& dir);

// Re-encrypts one regular file at `path` (inside a kmsfs mount): creates a temp file in the same
// directory (the mount gives it a new file id and a fresh DEK from keyd's GenerateDataKey),
// copies the content, fsyncs, copies owner, mode, xattrs and then atime/mtime, checks that the
// original did not change meanwhile (size, mtime, ctime), renames the copy over it and fsyncs
// the directory. Any failure removes the copy and leaves the original as it was.
// kFailedPrecondition for a file with more than one hard link (renaming over one name would
// split the link: the other names would keep the old DEK), kInvalidArgument for non-regular
// files. `on_bytes` (may be empty) is called with each chunk's size.
// kFailedPrecondition, too, while the file is open for writing by anyone (a read lease,
// F_SETLEASE F_RDLCK, is refused then); the lease is held during the copy, so a writer opening
// the file meanwhile aborts this file (kUnavailable, run again). A lease break signals SIGIO:
// the caller must ignore SIGIO.
Status ReencryptFile(const std::string& path, const std::function<void(uint64_t)>& on_bytes);

}  // namespace kmsfs::fs::lifecycle
