// PeerCred: who is at the other end of a Unix socket, as the kernel says (SO_PEERCRED, /proc).
#pragma once

#include <sys/types.h>

#include <string>

#include "common/base/status.h"

namespace kmsfs::ipc {

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
};

// The credentials the kernel recorded when the peer called connect() (or socketpair()). They
// describe the peer *then*: a later setuid() or exec in the peer does not change them, and a
// descriptor passed to another process keeps the original process's credentials. kIo with errno.
Result<PeerCred> GetPeerCred(int fd);

// The path of `pid`'s executable (readlink /proc/PID/exe), exactly as the kernel reports it —
// including a " (deleted)" suffix when the file was replaced since exec (a package upgrade), which
// policy matching must treat as its own string.
//
// Race: a pid is only a number. If the peer exits after connect() and the number is reused, the
// answer describes another process. We narrow the window with a pidfd: open it, readlink, then
// check the pidfd's process is still alive — so the answer is at least about the process that held
// the pid when the pidfd was opened. What remains is reuse between connect() and pidfd_open(),
// which needs the peer to exit and ~pid_max new processes in that gap; SO_PEERPIDFD (Linux 6.5)
// would close it and is not available on Debian 12's 6.1 kernel. Falls back to plain readlink
// where pidfd_open is unsupported or filtered (ENOSYS, or EPERM from seccomp).
//
// Reading another user's (or any non-dumpable process's) exe link needs CAP_SYS_PTRACE: kIo with
// EACCES/EPERM. kNotFound (ESRCH) if the process is gone. Never returns an empty path.
Result<std::string> ExecutableOf(pid_t pid);

}  // namespace kmsfs::ipc
