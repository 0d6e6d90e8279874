#include "common/ipc/socket_util.h"

#include <poll.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace kmsfs::ipc::internal {

Status WaitFd(int fd, short events, Deadline deadline, std::string_view what) {
  for (;;) {
    pollfd p{fd, events, 0};
    // Recomputed each round, so EINTR cannot stretch the deadline.
    const int r = ::poll(&p, 1, deadline.PollTimeoutMs());
    if (r > 0) {
      if (p.revents & POLLNVAL) return Error::FromErrno("poll", EBADF);
      return Status::Ok();
    }
    if (r == 0) return Error(Code::kUnavailable, "timed out " + std::string(what), ETIMEDOUT);
    if (errno == EINTR) continue;
    return Error::FromErrno("poll", errno);
  }
}

std::string ErrnoText(int err) {
  char buf[128];
  // The GNU strerror_r (C++ always has _GNU_SOURCE with glibc) returns the text, maybe not in buf.
  return ::strerror_r(err, buf, sizeof buf);
}

Error SocketError(std::string_view call, int err) {
  switch (err) {
    case EPIPE:
    case ECONNRESET:
    case ENOTCONN:
    case ECONNABORTED:
      return Error(Code::kUnavailable,
                   std::string(call) + ": peer is gone (" + ErrnoText(err) + ")", err);
    default:
      return Error::FromErrno(call, err);
  }
}

}  // namespace kmsfs::ipc::internal
