// BackingFile: the narrow I/O seam between the content codec and one ciphertext file.
#pragma once

#include <cstdint>
#include <ctime>
#include <span>

#include "common/base/bytes.h"
#include "common/base/status.h"

namespace kmsfs::fs {

// Positional I/O on one backing file. Errors are kIo with the OS errno kept (ENOSPC, EIO...).
// Implementations: PosixBackingFile (an fd; posix_backing_file.h), MemBackingFile and
// FaultyBackingFile in tests/fakes. Thread-safe for concurrent positional calls (like pread).
class BackingFile {
 public:
  virtual ~BackingFile() = default;
  // Reads up to buf.size() bytes at `offset`; returns the count (short only at end of file).
  virtual Result<size_t> PRead(std::span<uint8_t> buf, uint64_t offset) = 0;
  // Writes all of `data` at `offset` (retrying short writes) or fails.
  virtual Status PWrite(ByteSpan data, uint64_t offset) = 0;
  virtual Result<uint64_t> Size() = 0;
  virtual Status Truncate(uint64_t size) = 0;
  // fdatasync (data_only) or fsync.
  virtual Status Sync(bool data_only) = 0;

  // Access and modification time. A link-slot write (fs::UpdateLinks) changes which names the
  // file has, not its contents, and the filesystem reports the backing file's mtime: it reads
  // the times before and puts them back after, so rename/link/unlink keep the mtime (ctime
  // still changes, as POSIX wants). The defaults have no times and set none (in-memory fakes).
  struct Times {
    struct timespec atime {};
    struct timespec mtime {};
  };
  virtual Result<Times> GetTimes() { return Times{}; }
  virtual Status SetTimes(const Times& /*times*/) { return Status::Ok(); }
};

}  // namespace kmsfs::fs
