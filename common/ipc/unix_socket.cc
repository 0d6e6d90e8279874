#include "common/ipc/unix_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/ipc/socket_util.h"

namespace kmsfs::ipc {
namespace {

static_assert(kMaxSocketPathLen + 1 == sizeof(sockaddr_un{}.sun_path));

// How long UnixListen waits for an existing socket to answer before calling it stale. A live keyd
// accepts in microseconds (the kernel completes the handshake from the backlog).
constexpr auto kStaleProbeTimeout = std::chrono::milliseconds(500);

sockaddr_un MakeAddress(const std::string& path, socklen_t* len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());  // validated: fits with the NUL
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return addr;
}

Result<UniqueFd> NewSocket() {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Error::FromErrno("socket(AF_UNIX)", errno);
  return UniqueFd(fd);
}

Error Unreachable(const std::string& path, int err) {
  if (err == EACCES || err == EPERM) {
    return Error(Code::kPermissionDenied,
                 "permission denied connecting to the key service at " + path, err);
  }
  return Error(Code::kUnavailable,
               "key service unreachable at " + path + ": " + internal::ErrnoText(err), err);
}

}  // namespace

Status ValidateSocketPath(std::string_view path) {
  if (path.empty()) return Error(Code::kInvalidArgument, "the socket path is empty");
  if (path.find('\0') != std::string_view::npos) {
    return Error(Code::kInvalidArgument, "the socket path contains a NUL byte");
  }
  if (path[0] == '@') {
    return Error(Code::kInvalidArgument, "abstract socket names ('@...') are not supported");
  }
  if (path.size() > kMaxSocketPathLen) {
    return Error(Code::kInvalidArgument,
                 "socket path " + std::string(path) + " is " + std::to_string(path.size()) +
                     " bytes; a Unix socket path must be at most " +
                     std::to_string(kMaxSocketPathLen) + " (choose a shorter directory)");
  }
  return Status::Ok();
}

Result<std::string> ResolveSocketPath(std::string_view flag_value) {
  std::string path;
  if (!flag_value.empty()) {
    path = flag_value;
  } else if (const char* env = ::secure_getenv(kSocketEnvVar); env != nullptr && *env != '\0') {
    path = env;
  } else {
    path = kDefaultSocketPath;
  }
  KMSFS_RETURN_IF_ERROR(ValidateSocketPath(path));
  return path;
}

Result<UniqueFd> UnixListen(const std::string& path, int backlog, mode_t mode) {
  KMSFS_RETURN_IF_ERROR(ValidateSocketPath(path));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Error(Code::kAlreadyExists,
                   path + " exists and is not a socket; refusing to replace it");
    }
    auto probe = UnixConnect(path, Deadline::After(kStaleProbeTimeout));
    if (probe.ok()) {
      return Error(Code::kAlreadyExists, "another server is already listening on " + path);
    }
    // Only "nobody is listening" (or "gone meanwhile") proves staleness; a full backlog, a
    // timeout or EACCES do not.
    const int probe_errno = probe.error().sys_errno();
    if (probe_errno != ECONNREFUSED && probe_errno != ENOENT) {
      return Error(Code::kAlreadyExists,
                   path + " exists and its owner cannot be ruled out (" +
                       probe.error().message() + "); refusing to replace it");
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Error::FromErrno("unlink stale socket " + path, errno);
    }
  } else if (errno != ENOENT) {
    return Error::FromErrno("lstat " + path, errno);
  }

  KMSFS_ASSIGN_OR_RETURN(UniqueFd fd, NewSocket());
  socklen_t len = 0;
  const sockaddr_un addr = MakeAddress(path, &len);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    const int err = errno;
    if (err == EADDRINUSE) {
      return Error(Code::kAlreadyExists, "another server bound " + path + " meanwhile", err);
    }
    return Error::FromErrno("bind " + path, err);
  }
  // From here on the file is ours: remove it again on failure.
  auto fail = [&path](std::string_view what, int err) {
    ::unlink(path.c_str());
    return Error::FromErrno(std::string(what) + " " + path, err);
  };
  if (::chmod(path.c_str(), mode) != 0) return fail("chmod", errno);
  if (::listen(fd.get(), backlog) != 0) return fail("listen", errno);
  return fd;
}

Result<UniqueFd> UnixAccept(int listen_fd, Deadline deadline) {
  for (;;) {
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) return UniqueFd(fd);
    const int err = errno;
    switch (err) {
      case EINTR:
      case ECONNABORTED:
      case EPROTO:
        continue;
      case EAGAIN:
#if EWOULDBLOCK != EAGAIN
      case EWOULDBLOCK:
#endif
        KMSFS_RETURN_IF_ERROR(
            internal::WaitFd(listen_fd, POLLIN, deadline, "waiting for a connection"));
        continue;
      case EMFILE:
      case ENFILE:
      case ENOBUFS:
      case ENOMEM:
        return Error(Code::kUnavailable,
                     "accept: out of resources (" + internal::ErrnoText(err) + ")", err);
      default:
        return Error::FromErrno("accept", err);
    }
  }
}

Result<UniqueFd> UnixConnect(const std::string& path, Deadline deadline) {
  KMSFS_RETURN_IF_ERROR(ValidateSocketPath(path));
  KMSFS_ASSIGN_OR_RETURN(UniqueFd fd, NewSocket());
  socklen_t len = 0;
  const sockaddr_un addr = MakeAddress(path, &len);
  auto backoff = std::chrono::milliseconds(1);
  for (;;) {
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0) return fd;
    const int err = errno;
    switch (err) {
      case EINTR:
        continue;
      case EISCONN:  // an interrupted earlier attempt completed
        return fd;
      case EINPROGRESS: {
        // Not what AF_UNIX does today, but allowed by POSIX: wait, then ask how it went.
        KMSFS_RETURN_IF_ERROR(internal::WaitFd(fd.get(), POLLOUT, deadline,
                                               "connecting to the key service at " + path));
        int so_error = 0;
        socklen_t so_len = sizeof so_error;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &so_len) != 0) {
          return Error::FromErrno("getsockopt(SO_ERROR)", errno);
        }
        if (so_error == 0) return fd;
        return Unreachable(path, so_error);
      }
      case EAGAIN: {
        // The listen backlog is full: keyd is alive but busy. AF_UNIX has no "in progress" state
        // to poll for, so retry with capped exponential backoff until the deadline.
        const auto left = deadline.Remaining();
        if (left.count() <= 0) {
          return Error(Code::kUnavailable,
                       "key service at " + path + " is busy (connection backlog full); timed out",
                       ETIMEDOUT);
        }
        std::this_thread::sleep_for(std::min(backoff, left));
        backoff = std::min(backoff * 2, std::chrono::milliseconds(64));
        continue;
      }
      default:
        return Unreachable(path, err);
    }
  }
}

}  // namespace kmsfs::ipc
