#include "keyd/audit/audit_wal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/crypto/hash.h"

namespace kmsfs::keyd {
namespace {

constexpr char kMagic[4] = {'K', 'A', 'W', '1'};
constexpr size_t kCheckLen = 16;
constexpr size_t kHeaderLen = 4 + 4 + 8;

void PutLe(uint64_t v, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetLe(std::string_view s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

}  // namespace

void AppendWalFrame(uint64_t sequence, std::string_view text, std::string* out) {
  const size_t start = out->size();
  out->append(kMagic, sizeof kMagic);
  PutLe(text.size(), 4, out);
  PutLe(sequence, 8, out);
  out->append(text);
  const crypto::Sha256Digest d = crypto::Sha256(AsBytes(std::string_view(*out).substr(start)));
  out->append(reinterpret_cast<const char*>(d.data()), kCheckLen);
}

std::vector<WalFrame> ParseWalFrames(std::string_view bytes) {
  std::vector<WalFrame> out;
  size_t at = 0;
  while (bytes.size() - at >= kWalFrameOverhead) {
    if (std::memcmp(bytes.data() + at, kMagic, sizeof kMagic) != 0) break;
    const uint64_t len = GetLe(bytes, at + 4, 4);
    if (len > kWalMaxText || bytes.size() - at - kWalFrameOverhead < len) break;
    const uint64_t seq = GetLe(bytes, at + 8, 8);
    if (!out.empty() && seq != out.back().sequence + 1) break;
    const std::string_view covered = bytes.substr(at, kHeaderLen + len);
    const crypto::Sha256Digest d = crypto::Sha256(AsBytes(covered));
    if (std::memcmp(d.data(), bytes.data() + at + kHeaderLen + len, kCheckLen) != 0) break;
    out.push_back(WalFrame{seq, std::string(covered.substr(kHeaderLen))});
    at += kWalFrameOverhead + len;
  }
  return out;
}

Result<WalFile> WalFile::Open(const std::string& dir, bool create, bool* created) {
  WalFile w;
  w.dir_ = dir;
  w.path_ = dir + "/" + kWalFileName;
  *created = false;
  // O_NONBLOCK until the checks below have seen a regular file: opening a FIFO or device node
  // placed there must neither block nor wait on a device (it is refused either way).
  w.fd_.Reset(::open(w.path_.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!w.fd_ && errno == ENOENT) {
    if (!create) return Error(Code::kNotFound, w.path_ + " does not exist", ENOENT);
    w.fd_.Reset(::open(w.path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!w.fd_) return Error::FromErrno("create " + w.path_, errno);
    *created = true;
    if (::fchmod(w.fd_.get(), 0600) != 0) return Error::FromErrno("chmod " + w.path_, errno);
  }
  if (!w.fd_) {
    const int err = errno;
    if (err == ELOOP) {
      return Error(Code::kPermissionDenied,
                   w.path_ +
                       " is a symbolic link; keyd writes its audit records only to a regular "
                       "file in its state dir. Remove the link");
    }
    return Error(Code::kFailedPrecondition,
                 "open " + w.path_ + ": " + std::strerror(err) +
                     "; it may hold audit records not yet in data.mdb, so keyd does not start "
                     "without it: fix its ownership or permissions",
                 err);
  }
  struct stat st {};
  if (::fstat(w.fd_.get(), &st) != 0) return Error::FromErrno("stat " + w.path_, errno);
  if (!S_ISREG(st.st_mode)) {
    return Error(Code::kPermissionDenied,
                 w.path_ + " is not a regular file (a FIFO, device or socket); keyd writes its " +
                     "audit records only to a regular file in its state dir. Remove it");
  }
  if (st.st_nlink != 1) {
    // Another name for the same file could be read or rewritten through a path we do not guard.
    return Error(Code::kPermissionDenied,
                 w.path_ + " has " + std::to_string(st.st_nlink) +
                     " hard links; keyd's audit file must have no other name. Remove the other "
                     "link(s) (find / -samefile " +
                     w.path_ + ")");
  }
  if ((st.st_mode & 077) != 0) {
    return Error(Code::kPermissionDenied,
                 w.path_ + " has mode " + Octal(st.st_mode) +
                     ": others could read or change audit records. Fix: chmod 600 " + w.path_);
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return Error(Code::kPermissionDenied,
                 w.path_ + " is owned by uid " + std::to_string(st.st_uid) +
                     ", not by this process or root. Fix: chown it to the user keyd runs as");
  }
  // A regular file ignores O_NONBLOCK, but clear it so no later write depends on that.
  const int flags = ::fcntl(w.fd_.get(), F_GETFL);
  if (flags < 0 || ::fcntl(w.fd_.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return Error::FromErrno("fcntl " + w.path_, errno);
  }
  w.size_ = static_cast<uint64_t>(st.st_size);
  return w;
}

Result<std::string> WalFile::ReadAll() const {
  std::string out(size_, '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n =
        ::pread(fd_.get(), out.data() + got, out.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("read " + path_, errno);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

Status WalFile::Preallocate(uint64_t bytes, bool sync_dir) {
  if (size_ > bytes) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(bytes)) != 0) {
      return Error::FromErrno("truncate " + path_, errno);
    }
    size_ = bytes;
  }
  const std::string zeros(std::min<uint64_t>(bytes, uint64_t{1} << 20), '\0');
  while (size_ < bytes) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(bytes - size_, zeros.size()));
    const ssize_t w = ::pwrite(fd_.get(), zeros.data(), n, static_cast<off_t>(size_));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Error::FromErrno("write " + path_, errno);
    size_ += static_cast<uint64_t>(w);
  }
  if (::fsync(fd_.get()) != 0) return Error::FromErrno("fsync " + path_, errno);
  if (sync_dir) {
    UniqueFd d(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!d) return Error::FromErrno("open " + dir_, errno);
    if (::fsync(d.get()) != 0) return Error::FromErrno("fsync " + dir_, errno);
  }
  return Status::Ok();
}

Status WalFile::Write(uint64_t offset, std::string_view data) {
  if (offset + data.size() > size_) {
    return Error(Code::kInternal, "audit WAL write past the end of " + path_);
  }
  if (fault_) {
    if (const int err = fault_(/*sync=*/false); err != 0) {
      return Error::FromErrno("write " + path_, err);
    }
  }
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd_.get(), data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("write " + path_, errno);
    if (n == 0) return Error(Code::kIo, "write " + path_ + ": no progress", EIO);
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  if (fault_) {
    if (const int err = fault_(/*sync=*/true); err != 0) {
      return Error::FromErrno("fdatasync " + path_, err);
    }
  }
  if (::fdatasync(fd_.get()) != 0) return Error::FromErrno("fdatasync " + path_, errno);
  return Status::Ok();
}

}  // namespace kmsfs::keyd
