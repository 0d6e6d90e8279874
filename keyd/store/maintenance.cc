#include "keyd/store/maintenance.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace kmsfs::keyd {
namespace {

// The audit trail's write-ahead file (keyd/audit/audit_wal.h; keyd/store cannot include
// keyd/audit). It holds audit records that may not be in data.mdb yet, so it is part of a state.
constexpr char kAuditWalName[] = "audit.wal";

Status FsyncPath(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd) return Error::FromErrno("open " + path, errno);
  if (::fsync(fd.get()) != 0) return Error::FromErrno("fsync " + path, errno);
  return Status::Ok();
}

// Copies `from` to the NEW file `to` (0600, fsync'ed).
Status CopyFile(const std::string& from, const std::string& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!in) return Error::FromErrno("open backup " + from, errno);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return Error::FromErrno("stat " + from, errno);
  if (!S_ISREG(st.st_mode)) {
    return Error(Code::kInvalidArgument, "backup " + from + " is not a regular file");
  }
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!out) return Error::FromErrno("create " + to, errno);
  if (::fchmod(out.get(), 0600) != 0) return Error::FromErrno("chmod " + to, errno);
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("read " + from, errno);
    }
    if (n == 0) break;
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = ::write(out.get(), buf + done, static_cast<size_t>(n - done));
      if (w < 0) {
        if (errno == EINTR) continue;
        return Error::FromErrno("write " + to, errno);
      }
      done += w;
    }
  }
  if (::fsync(out.get()) != 0) return Error::FromErrno("fsync " + to, errno);
  return Status::Ok();
}

// Removes the staging directory and what LMDB left in it.
void RemoveStaging(const std::string& staging) {
  for (const char* name : {"data.mdb", "lock.mdb", kAuditWalName}) {
    ::unlink((staging + "/" + name).c_str());
  }
  ::rmdir(staging.c_str());
}

}  // namespace

Result<UniqueFd> LockStateDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) {
    if (::chmod(dir.c_str(), 0700) != 0) return Error::FromErrno("chmod " + dir, errno);
  } else if (errno != EEXIST) {
    return Error::FromErrno("create state dir " + dir, errno);
  }
  const std::string path = dir + "/" + kStateLockName;
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return Error::FromErrno("open lock file " + path, errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Error(Code::kFailedPrecondition,
                   "the state in " + dir +
                       " is in use by another kmsfs-keyd (a serving keyd or a maintenance "
                       "command); stop it first (systemctl stop kmsfs-keyd.service "
                       "kmsfs-keyd.socket)");
    }
    return Error::FromErrno("lock " + path, errno);
  }
  return fd;
}

Status InstallBackup(const std::string& backup, const std::string& dir,
                     const OpenStagedState& open) {
  const std::string target = dir + "/data.mdb";
  struct stat st {};
  if (::lstat(target.c_str(), &st) == 0) {
    return Error(Code::kAlreadyExists,
                 dir +
                     " already holds a state (data.mdb); restore only into an empty state "
                     "directory: move the old state away first (nothing is overwritten)");
  }
  if (errno != ENOENT) return Error::FromErrno("stat " + target, errno);
  // A WAL left by the old state would not chain onto the restored trail (keyd would refuse to
  // start), or worse, its records would be missing from review: refuse it like data.mdb.
  const std::string wal = dir + "/" + kAuditWalName;
  if (::lstat(wal.c_str(), &st) == 0) {
    return Error(Code::kAlreadyExists,
                 dir + " holds " + kAuditWalName +
                     " (audit records of the state that was there); restore only into an empty "
                     "state directory: move the old state, " +
                     kAuditWalName + " included, away first (nothing is overwritten)");
  }
  if (errno != ENOENT) return Error::FromErrno("stat " + wal, errno);

  const std::string staging = dir + "/restore.tmp";
  RemoveStaging(staging);  // left over by an interrupted restore; ours (we hold the lock)
  if (::mkdir(staging.c_str(), 0700) != 0) {
    return Error::FromErrno("create " + staging, errno);
  }
  Status s = [&]() -> Status {
    KMSFS_RETURN_IF_ERROR(CopyFile(backup, staging + "/data.mdb"));
    {
      KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<Env> env, Env::Open(staging, Env::Options{}));
      KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<KeyStore> store, open(std::move(env)));
      // The store (and its Env) close here, before the file moves. `open` must have flushed and
      // closed its audit trail: staging's audit.wal is removed with the staging dir.
    }
    if (::rename((staging + "/data.mdb").c_str(), target.c_str()) != 0) {
      return Error::FromErrno("rename into " + target, errno);
    }
    return FsyncPath(dir, O_RDONLY | O_DIRECTORY);
  }();
  RemoveStaging(staging);
  return s;
}

Status CompactStateDir(const std::string& dir) {
  const std::string tmp = dir + "/compact.tmp";
  ::unlink(tmp.c_str());  // left over by an interrupted compaction; ours (we hold the lock)
  Status s = [&]() -> Status {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return Error::FromErrno("create " + tmp, errno);
    if (::fchmod(fd.get(), 0600) != 0) return Error::FromErrno("chmod " + tmp, errno);
    {
      KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<Env> env, Env::Open(dir, Env::Options{}));
      KMSFS_RETURN_IF_ERROR(env->CopyTo(fd.get()));  // fsyncs
      // The Env closes here, before the file it maps is replaced.
    }
    if (::close(fd.Release()) != 0) return Error::FromErrno("close " + tmp, errno);
    if (::rename(tmp.c_str(), (dir + "/data.mdb").c_str()) != 0) {
      return Error::FromErrno("rename " + tmp + " over data.mdb", errno);
    }
    return FsyncPath(dir, O_RDONLY | O_DIRECTORY);
  }();
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

}  // namespace kmsfs::keyd
