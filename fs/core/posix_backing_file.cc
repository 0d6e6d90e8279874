#include "fs/core/posix_backing_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <limits>

#include "common/base/check.h"

namespace kmsfs::fs {
namespace {

constexpr uint64_t kMaxOffset = static_cast<uint64_t>(std::numeric_limits<off_t>::max());

// True if [offset, offset + len) is addressable with off_t.
bool InRange(uint64_t offset, size_t len) {
  return offset <= kMaxOffset && len <= kMaxOffset - offset;
}

Error OutOfRange() {
  return Error(Code::kInvalidArgument, "backing file offset beyond off_t", EFBIG);
}

}  // namespace

PosixBackingFile::PosixBackingFile(UniqueFd fd) : fd_(std::move(fd)) { KMSFS_CHECK(fd_.valid()); }

Result<size_t> PosixBackingFile::PRead(std::span<uint8_t> buf, uint64_t offset) {
  if (!InRange(offset, buf.size())) return OutOfRange();
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = ::pread(fd_.get(), buf.data() + done, buf.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("pread on backing file", errno);
    }
    if (n == 0) break;  // end of file
    done += static_cast<size_t>(n);
  }
  return done;
}

Status PosixBackingFile::PWrite(ByteSpan data, uint64_t offset) {
  if (!InRange(offset, data.size())) return OutOfRange();
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd_.get(), data.data() + done, data.size() - done,
                               static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("pwrite on backing file", errno);
    }
    // pwrite(2) returns 0 only for a zero-length request; anything else would loop forever.
    if (n == 0) return Error::FromErrno("pwrite on backing file wrote nothing", EIO);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<uint64_t> PosixBackingFile::Size() {
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return Error::FromErrno("fstat on backing file", errno);
  if (st.st_size < 0) return Error(Code::kIo, "fstat on backing file: negative size", EIO);
  return static_cast<uint64_t>(st.st_size);
}

Status PosixBackingFile::Truncate(uint64_t size) {
  if (size > kMaxOffset) return OutOfRange();
  for (;;) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(size)) == 0) return Status::Ok();
    if (errno != EINTR) return Error::FromErrno("ftruncate on backing file", errno);
  }
}

Result<BackingFile::Times> PosixBackingFile::GetTimes() {
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return Error::FromErrno("fstat on backing file", errno);
  return Times{st.st_atim, st.st_mtim};
}

Status PosixBackingFile::SetTimes(const Times& times) {
  const struct timespec ts[2] = {times.atime, times.mtime};
  if (::futimens(fd_.get(), ts) != 0) return Error::FromErrno("futimens on backing file", errno);
  return Status::Ok();
}

Status PosixBackingFile::Sync(bool data_only) {
  for (;;) {
    const int rc = data_only ? ::fdatasync(fd_.get()) : ::fsync(fd_.get());
    if (rc == 0) return Status::Ok();
    // EINTR cannot happen for fsync on Linux, but retrying is harmless and portable.
    if (errno != EINTR) return Error::FromErrno(data_only ? "fdatasync" : "fsync", errno);
  }
}

}  // namespace kmsfs::fs
