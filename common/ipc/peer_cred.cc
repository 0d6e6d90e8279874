#include "common/ipc/peer_cred.h"

#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "common/base/unique_fd.h"

namespace kmsfs::ipc {
namespace {

// glibc 2.36 has pidfd_open() in <sys/pidfd.h>, but the raw syscall keeps this buildable against
// older headers too.
int PidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

Error Gone(pid_t pid) {
  return Error(Code::kNotFound, "process " + std::to_string(pid) + " has exited", ESRCH);
}

}  // namespace

Result<PeerCred> GetPeerCred(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return Error::FromErrno("getsockopt(SO_PEERCRED)", errno);
  }
  if (len != sizeof cred) return Error(Code::kInternal, "SO_PEERCRED returned a short struct");
  return PeerCred{cred.pid, cred.uid, cred.gid};
}

Result<std::string> ExecutableOf(pid_t pid) {
  if (pid <= 0) return Error(Code::kInvalidArgument, "invalid pid " + std::to_string(pid));
  UniqueFd pidfd(PidfdOpen(pid));
  if (!pidfd.valid()) {
    if (errno == ESRCH) return Gone(pid);
    // ENOSYS: kernel < 5.3; EPERM: a seccomp filter's default answer. Both mean "no pidfd here":
    // fall back to the plain (racier) readlink rather than refusing to name the executable.
    if (errno != ENOSYS && errno != EPERM) return Error::FromErrno("pidfd_open", errno);
  }
  const std::string link = "/proc/" + std::to_string(pid) + "/exe";
  char buf[PATH_MAX + 1];
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  if (n < 0) {
    if (errno == ENOENT) return Gone(pid);  // no /proc/PID (or a zombie with no exe)
    return Error::FromErrno("readlink " + link, errno);
  }
  if (n == 0 || static_cast<size_t>(n) >= sizeof buf) {
    return Error(Code::kInternal, "readlink " + link + " returned an empty or truncated path");
  }
  if (pidfd.valid()) {
    // A pidfd polls readable once its process has exited. Still running now means the pid could
    // not have been reused while we read the link, so the link belonged to the pidfd's process.
    pollfd p{pidfd.get(), POLLIN, 0};
    int r;
    do {
      r = ::poll(&p, 1, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return Error::FromErrno("poll(pidfd)", errno);
    if (r > 0) return Gone(pid);
  }
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace kmsfs::ipc
