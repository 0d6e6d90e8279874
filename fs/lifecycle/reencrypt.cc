#include "fs/lifecycle/reencrypt.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/scope_exit.h"
#include "common/base/unique_fd.h"
#include "common/crypto/random.h"
#include "fs/core/mountinfo.h"

namespace kmsfs::fs::lifecycle {
namespace {

bool Same(const struct stat& a, const struct stat& b) {
  return a.st_size == b.st_size && a.st_mtim.tv_sec == b.st_mtim.tv_sec &&
         a.st_mtim.tv_nsec == b.st_mtim.tv_nsec && a.st_ctim.tv_sec == b.st_ctim.tv_sec &&
         a.st_ctim.tv_nsec == b.st_ctim.tv_nsec && a.st_ino == b.st_ino;
}

Status WriteAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    const ssize_t n = ::write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("write copy", errno);
    data += n;
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status CopyXattrs(int from, int to) {
  ssize_t len = ::flistxattr(from, nullptr, 0);
  if (len < 0) {
    if (errno == ENOTSUP || errno == ENOSYS) return Status::Ok();
    return Error::FromErrno("listxattr", errno);
  }
  std::string names(static_cast<size_t>(len), '\0');
  len = ::flistxattr(from, names.data(), names.size());
  if (len < 0) return Error::FromErrno("listxattr", errno);
  names.resize(static_cast<size_t>(len));
  for (size_t pos = 0; pos < names.size();) {
    const std::string name = names.c_str() + pos;
    pos += name.size() + 1;
    if (name.empty()) continue;
    ssize_t vlen = ::fgetxattr(from, name.c_str(), nullptr, 0);
    if (vlen < 0) return Error::FromErrno("getxattr", errno);
    std::string value(static_cast<size_t>(vlen), '\0');
    vlen = ::fgetxattr(from, name.c_str(), value.data(), value.size());
    if (vlen < 0) return Error::FromErrno("getxattr", errno);
    if (::fsetxattr(to, name.c_str(), value.data(), static_cast<size_t>(vlen), 0) != 0) {
      return Error::FromErrno("setxattr on the copy", errno);
    }
  }
  return Status::Ok();
}

// The device numbers ("major:minor", as /proc/self/mountinfo writes them) of every mounted
// kmsfs volume.
std::vector<std::string> KmsfsDevices() {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, tok;
    f >> id >> parent >> dev;
    while (f >> tok && tok != "-") {
    }
    std::string fstype;
    f >> fstype;
    if (fstype == "fuse.kmsfs") out.push_back(dev);
  }
  return out;
}

}  // namespace

Result<UniqueFd> OpenKmsfsDirNoFollow(const std::string& dir) {
  // Component by component, each opened relative to the one before with O_NOFOLLOW: a symlink
  // anywhere in the path is refused (ELOOP), and once a directory is open, renaming or
  // replacing its path cannot move what we act on. O_PATH for the components on the way (they
  // need search permission only); the last is opened for reading (readdir, fsync).
  if (dir.empty()) return Error(Code::kInvalidArgument, "empty directory path");
  UniqueFd cur(::open(dir[0] == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur.valid()) return Error::FromErrno("open " + dir, errno);
  size_t pos = 0;
  while (pos < dir.size()) {
    const size_t slash = dir.find('/', pos);
    const std::string comp =
        dir.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    pos = slash == std::string::npos ? dir.size() : slash + 1;
    if (comp.empty() || comp == ".") continue;
    UniqueFd next(::openat(cur.get(), comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      const int err = errno;
      if (err == ELOOP || err == ENOTDIR) {
        struct stat lst;
        if (::fstatat(cur.get(), comp.c_str(), &lst, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(lst.st_mode)) {
          return Error(Code::kInvalidArgument,
                       dir + ": component \"" + comp +
                           "\" is a symlink; refused (pass the path without symlinks)");
        }
      }
      return Error::FromErrno("open " + dir + " (at \"" + comp + "\")", err);
    }
    cur = std::move(next);
  }
  UniqueFd out(::openat(cur.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!out.valid()) return Error::FromErrno("open directory " + dir, errno);
  // The check is on the directory we hold, not on a path: whatever happened to the path since,
  // every later *at() call acts inside this kmsfs volume.
  struct stat st;
  if (::fstat(out.get(), &st) != 0) return Error::FromErrno("stat " + dir, errno);
  const std::string dev = std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  for (const auto& d : KmsfsDevices()) {
    if (d == dev) return out;
  }
  return Error(Code::kInvalidArgument, dir + " is not on a mounted kmsfs volume");
}

Result<std::string> KmsfsMountOf(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return Error::FromErrno("realpath " + path, errno);
  const std::string real(resolved);
  ::free(resolved);
  std::ifstream in("/proc/self/mountinfo");
  std::string line, best, best_type;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    std::istringstream f(line);
    std::string id, parent, dev, root, mp, opts, tok;
    f >> id >> parent >> dev >> root >> mp >> opts;
    while (f >> tok && tok != "-") {
    }
    std::string fstype;
    f >> fstype;
    mp = UnescapeMountinfo(mp);
    const bool under =
        real == mp || mp == "/" ||
        (real.size() > mp.size() && real.compare(0, mp.size(), mp) == 0 && real[mp.size()] == '/');
    if (under && mp.size() >= best.size()) {
      best = mp;
      best_type = fstype;
    }
  }
  if (best_type != "fuse.kmsfs") {
    return Error(Code::kInvalidArgument, path + " is not on a mounted kmsfs volume");
  }
  return best;
}

Result<uint64_t> RemoveStaleTemps(const std::string& dir) {
  KMSFS_ASSIGN_OR_RETURN(UniqueFd dirfd, OpenKmsfsDirNoFollow(dir));
  const int dup = ::fcntl(dirfd.get(), F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return Error::FromErrno("opendir " + dir, errno);
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    ::close(dup);
    return Error::FromErrno("opendir " + dir, errno);
  }
  std::vector<std::string> stale;
  while (const struct dirent* e = ::readdir(d)) {
    if (std::strncmp(e->d_name, kReencryptTempPrefix, sizeof(kReencryptTempPrefix) - 1) == 0) {
      stale.emplace_back(e->d_name);
    }
  }
  ::closedir(d);
  uint64_t removed = 0;
  for (const auto& name : stale) {
    if (::unlinkat(dirfd.get(), name.c_str(), 0) == 0) ++removed;
  }
  return removed;
}

Status ReencryptFile(const std::string& path, const std::function<void(uint64_t)>& on_bytes) {
  // The directory first (no symlinks, on a kmsfs mount), then everything relative to it: as
  // root on other users' files, a path swapped between two calls must not redirect us.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") {
    return Error(Code::kInvalidArgument, path + ": not a file name");
  }
  KMSFS_ASSIGN_OR_RETURN(UniqueFd dirfd, OpenKmsfsDirNoFollow(dir));
  UniqueFd src(::openat(dirfd.get(), base.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!src.valid()) return Error::FromErrno("open " + path, errno);
  struct stat before;
  if (::fstat(src.get(), &before) != 0) return Error::FromErrno("stat " + path, errno);
  if (!S_ISREG(before.st_mode)) return Error(Code::kInvalidArgument, path + ": not a regular file");
  // Open for writing elsewhere? The kernel grants a read lease only while nobody has the file
  // open for writing (fcntl(2) F_SETLEASE; any fd on this machine, through this mount), so
  // EAGAIN is an exact answer, not a guess. The lease is held until `src` is closed: a writer
  // opening the file meanwhile breaks it (and waits for us, up to lease-break-time), which the
  // checks before and after the rename see. EINVAL/ENOSYS: no leases here, not checked.
  bool leased = true;
  if (::fcntl(src.get(), F_SETLEASE, F_RDLCK) != 0) {
    if (errno == EAGAIN) {
      return Error(Code::kFailedPrecondition,
                   path + ": open for writing by some process; close it first (its later "
                          "writes would go to the replaced copy and be lost)");
    }
    leased = false;
  }
  auto lease_broken = [&] { return leased && ::fcntl(src.get(), F_GETLEASE) != F_RDLCK; };
  if (before.st_nlink > 1) {
    return Error(
        Code::kFailedPrecondition,
        path + ": has " + std::to_string(before.st_nlink) +
            " hard links; re-encrypting one name would split them (see docs/lifecycle.md)");
  }

  uint8_t rnd[8];
  crypto::RandomBytes(std::span<uint8_t>(rnd, sizeof(rnd)));
  const std::string tmp = kReencryptTempPrefix + HexEncode(ByteSpan(rnd, sizeof(rnd)));
  UniqueFd dst(::openat(dirfd.get(), tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!dst.valid()) return Error::FromErrno("create copy in " + dir, errno);
  bool keep = false;
  ScopeExit cleanup([&] {
    if (!keep) (void)::unlinkat(dirfd.get(), tmp.c_str(), 0);
  });

  std::vector<char> buf(1 << 20);
  for (;;) {
    const ssize_t n = ::read(src.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("read " + path, errno);
    if (n == 0) break;
    KMSFS_RETURN_IF_ERROR(WriteAll(dst.get(), buf.data(), static_cast<size_t>(n)));
    if (on_bytes) on_bytes(static_cast<uint64_t>(n));
  }
  // Data first: flushing it later (writeback) would set the mtime we are about to restore.
  if (::fsync(dst.get()) != 0) return Error::FromErrno("fsync copy", errno);
  // Owner before mode: chown clears set-id bits.
  if (::fchown(dst.get(), before.st_uid, before.st_gid) != 0) {
    return Error::FromErrno("chown copy", errno);
  }
  if (::fchmod(dst.get(), before.st_mode & 07777) != 0)
    return Error::FromErrno("chmod copy", errno);
  KMSFS_RETURN_IF_ERROR(CopyXattrs(src.get(), dst.get()));
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  if (::fsync(dst.get()) != 0) return Error::FromErrno("fsync copy", errno);
  // Times last, after the copy is closed: the mount may still write the file's metadata when it
  // is closed, which would move its mtime to now.
  if (::close(dst.Release()) != 0) return Error::FromErrno("close copy", errno);
  if (::utimensat(dirfd.get(), tmp.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    return Error::FromErrno("set times on copy", errno);
  }
  struct stat after;
  if (::fstatat(dirfd.get(), base.c_str(), &after, AT_SYMLINK_NOFOLLOW) != 0) {
    return Error::FromErrno("stat " + path, errno);
  }
  if (!Same(before, after)) {
    return Error(Code::kUnavailable, path + ": changed while being re-encrypted; run again");
  }
  if (lease_broken()) {
    return Error(Code::kUnavailable,
                 path + ": opened for writing while being re-encrypted; run again");
  }
  if (::renameat(dirfd.get(), tmp.c_str(), dirfd.get(), base.c_str()) != 0) {
    return Error::FromErrno("rename copy over " + path, errno);
  }
  keep = true;
  // A writer that looked the name up just before the rename now holds the old inode (it waits
  // on our lease): say so rather than report a clean success.
  if (lease_broken()) {
    return Error(Code::kFailedPrecondition,
                 path + ": opened for writing during the rename; writes through that descriptor "
                        "go to the replaced copy");
  }
  // A rename may rewrite the file's header (its directory-entry binding), which moves the
  // backing mtime: set the times once more on the final name.
  if (::utimensat(dirfd.get(), base.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    return Error::FromErrno("set times on " + path, errno);
  }
  // The rename is durable once the directory is; a mount without fsyncdir still renamed.
  if (::fsync(dirfd.get()) != 0 && errno != EINVAL && errno != ENOSYS) {
    return Error::FromErrno("fsync directory " + dir, errno);
  }
  return Status::Ok();
}

}  // namespace kmsfs::fs::lifecycle
