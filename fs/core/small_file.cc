#include "fs/core/small_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/base/unique_fd.h"

namespace kmsfs::fs {
namespace {

Status WriteAll(int fd, ByteSpan data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("write", errno);
    }
    if (n == 0) return Error::FromErrno("write wrote nothing", EIO);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// renameat2(RENAME_NOREPLACE); falls back to link+unlink semantics where the filesystem does not
// support the flag (EINVAL), which equally refuses to replace an existing name.
Status RenameNoReplace(int dirfd, const std::string& from, const std::string& to) {
  if (::renameat2(dirfd, from.c_str(), dirfd, to.c_str(), RENAME_NOREPLACE) == 0) {
    return Status::Ok();
  }
  if (errno == EEXIST) return Error(Code::kAlreadyExists, to + " already exists", EEXIST);
  if (errno != EINVAL && errno != ENOSYS) return Error::FromErrno("renameat2 " + to, errno);
  if (::linkat(dirfd, from.c_str(), dirfd, to.c_str(), 0) != 0) {
    if (errno == EEXIST) return Error(Code::kAlreadyExists, to + " already exists", EEXIST);
    return Error::FromErrno("linkat " + to, errno);
  }
  if (::unlinkat(dirfd, from.c_str(), 0) != 0) return Error::FromErrno("unlinkat " + from, errno);
  return Status::Ok();
}

}  // namespace

Result<Bytes> ReadSmallFile(int dirfd, std::string_view name, size_t max_len) {
  const std::string n(name);
  UniqueFd fd(::openat(dirfd, n.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd.valid()) {
    if (errno == ENOENT) return Error(Code::kNotFound, n + " does not exist", ENOENT);
    if (errno == ELOOP) return Error(Code::kCorrupt, n + " is a symlink");
    return Error::FromErrno("open " + n, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::FromErrno("fstat " + n, errno);
  if (!S_ISREG(st.st_mode)) return Error(Code::kCorrupt, n + " is not a regular file");
  // Read one byte more than allowed, so an oversized file is noticed even if it grew after fstat.
  Bytes out(max_len + 1);
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t r = ::read(fd.get(), out.data() + done, out.size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("read " + n, errno);
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  if (done > max_len) return Error(Code::kCorrupt, n + " is larger than allowed");
  out.resize(done);
  return out;
}

Status SyncDirectory(int dirfd) {
  UniqueFd dir(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return Error::FromErrno("open directory for fsync", errno);
  if (::fsync(dir.get()) != 0) return Error::FromErrno("fsync directory", errno);
  return Status::Ok();
}

Status WriteNewFileAtomically(int dirfd, std::string_view name, ByteSpan data, mode_t mode) {
  const std::string final_name(name);
  const std::string tmp = final_name + ".tmp";
  constexpr int kFlags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
  UniqueFd fd(::openat(dirfd, tmp.c_str(), kFlags, mode));
  if (!fd.valid() && errno == EEXIST) {
    // Left by a crash between create and rename: it was never visible under `name`.
    if (::unlinkat(dirfd, tmp.c_str(), 0) != 0 && errno != ENOENT) {
      return Error::FromErrno("unlink stale " + tmp, errno);
    }
    fd = UniqueFd(::openat(dirfd, tmp.c_str(), kFlags, mode));
  }
  if (!fd.valid()) return Error::FromErrno("create " + tmp, errno);
  auto discard = [&](Status st) {
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return st;
  };
  // The umask must not loosen or tighten what the format prescribes (0400).
  if (::fchmod(fd.get(), mode) != 0) return discard(Error::FromErrno("fchmod " + tmp, errno));
  if (Status st = WriteAll(fd.get(), data); !st.ok()) return discard(st);
  if (::fsync(fd.get()) != 0) return discard(Error::FromErrno("fsync " + tmp, errno));
  fd.Reset();
  if (Status st = RenameNoReplace(dirfd, tmp, final_name); !st.ok()) return discard(st);
  return SyncDirectory(dirfd);
}

}  // namespace kmsfs::fs
