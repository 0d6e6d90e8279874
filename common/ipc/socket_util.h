// Internal helpers shared by frame.cc, unix_socket.cc and keyd_client.cc; not part of the API.
#pragma once

#include <string>
#include <string_view>

#include "common/base/status.h"
#include "common/ipc/deadline.h"

namespace kmsfs::ipc::internal {

// poll(2) for `events` on fd until ready or `deadline`, retrying EINTR with the remaining time.
// Ready includes POLLERR/POLLHUP: the next send/recv reports what happened. kUnavailable
// (sys_errno ETIMEDOUT) "timed out <what>" when the deadline passes; kIo on POLLNVAL or poll error.
Status WaitFd(int fd, short events, Deadline deadline, std::string_view what);

// strerror(err), but thread-safe (KeydClient runs on many threads).
std::string ErrnoText(int err);

// The Error for a failed socket call: peer-gone errnos (EPIPE, ECONNRESET, ENOTCONN, ECONNABORTED)
// are kUnavailable, anything else kIo; the errno is kept either way.
Error SocketError(std::string_view call, int err);

}  // namespace kmsfs::ipc::internal
