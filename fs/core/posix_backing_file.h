// PosixBackingFile: BackingFile over a file descriptor (pread/pwrite/fstat/ftruncate/fsync).
#pragma once

#include <cstdint>
#include <span>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/base/unique_fd.h"
#include "fs/core/backing_file.h"

namespace kmsfs::fs {

// The one implementation of the BackingFile seam that touches the OS, as LevelDB's PosixEnv is
// for its Env. Short reads and writes and EINTR are retried; every failure is kIo carrying the
// call's errno (Error::FromErrno), so ENOSPC stays ENOSPC up to the errno boundary. Offsets
// beyond INT64_MAX are kInvalidArgument (EFBIG): off_t is signed.
//
// Thread-safe: positional calls on one fd may run concurrently (as pread/pwrite). Owns the fd.
class PosixBackingFile final : public BackingFile {
 public:
  explicit PosixBackingFile(UniqueFd fd);
  PosixBackingFile(const PosixBackingFile&) = delete;
  PosixBackingFile& operator=(const PosixBackingFile&) = delete;

  Result<size_t> PRead(std::span<uint8_t> buf, uint64_t offset) override;
  Status PWrite(ByteSpan data, uint64_t offset) override;
  Result<uint64_t> Size() override;
  Status Truncate(uint64_t size) override;
  Status Sync(bool data_only) override;
  Result<Times> GetTimes() override;             // fstat
  Status SetTimes(const Times& times) override;  // futimens

  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

}  // namespace kmsfs::fs
