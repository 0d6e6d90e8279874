#include "keyd/server/listen_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/ipc/unix_socket.h"

namespace kmsfs::keyd {
namespace {

// mkdir -p for the parents of `path`, each new one chmod'ed to 0755 afterwards: mkdir's mode is
// filtered by the umask (the unit's UMask=0077 would give 0700, locking every other uid out).
// Existing directories are left alone.
Status MakeParentDirs(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return Status::Ok();
  const std::string dir = path.substr(0, slash);
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) == 0) {
      if (::chmod(prefix.c_str(), 0755) != 0) return Error::FromErrno("chmod " + prefix, errno);
    } else if (errno != EEXIST) {
      return Error::FromErrno("create directory " + prefix, errno);
    }
  }
  return Status::Ok();
}

Result<ListenSocket> Inherited(int fd, const std::string& fallback_path) {
  if (::sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, nullptr, 0) <= 0) {
    return Error(Code::kInvalidArgument,
                 "the socket systemd passed (fd " + std::to_string(fd) +
                     ") is not a listening Unix stream socket; check ListenStream= in "
                     "kmsfs-keyd.socket");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return Error::FromErrno("fcntl(O_NONBLOCK) on the inherited socket", errno);
  }
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return Error::FromErrno("fcntl(FD_CLOEXEC) on the inherited socket", errno);
  }
  ListenSocket out;
  out.fd = UniqueFd(fd);
  out.activated = true;
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
      len > offsetof(sockaddr_un, sun_path) && addr.sun_path[0] != '\0') {
    out.path.assign(addr.sun_path, ::strnlen(addr.sun_path, sizeof addr.sun_path));
  } else {
    out.path = fallback_path;
  }
  return out;
}

}  // namespace

Result<ListenSocket> AcquireListenSocket(const std::string& path, int backlog) {
  const int n = ::sd_listen_fds(/*unset_environment=*/1);
  if (n < 0) return Error::FromErrno("sd_listen_fds", -n);
  if (n > 1) {
    return Error(Code::kInvalidArgument,
                 "systemd passed " + std::to_string(n) +
                     " sockets; kmsfs-keyd serves exactly one (one ListenStream= in "
                     "kmsfs-keyd.socket)");
  }
  if (n == 1) return Inherited(SD_LISTEN_FDS_START, path);

  KMSFS_RETURN_IF_ERROR(MakeParentDirs(path));
  // 0666: see the header. Who may do what is decided per request from SO_PEERCRED.
  KMSFS_ASSIGN_OR_RETURN(UniqueFd fd, ipc::UnixListen(path, backlog, 0666));
  ListenSocket out;
  out.fd = std::move(fd);
  out.path = path;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    out.dev = st.st_dev;
    out.ino = st.st_ino;
  }
  return out;
}

void ReleaseListenSocket(ListenSocket& socket) {
  socket.fd.Reset();
  if (socket.activated || socket.ino == 0) return;
  struct stat st {};
  if (::lstat(socket.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == socket.dev &&
      st.st_ino == socket.ino) {
    ::unlink(socket.path.c_str());
  }
  socket.ino = 0;
}

}  // namespace kmsfs::keyd
