// Unix stream sockets for the keyd protocol: socket path resolution, listen, accept and connect.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "common/base/status.h"
#include "common/base/unique_fd.h"
#include "common/ipc/deadline.h"

namespace kmsfs::ipc {

inline constexpr char kDefaultSocketPath[] = "/run/kmsfs/keyd.sock";
inline constexpr char kSocketEnvVar[] = "KMSFS_SOCKET";
// sizeof(sockaddr_un::sun_path) is 108 and we keep the terminating NUL.
inline constexpr size_t kMaxSocketPathLen = 107;

// The socket every client and keyd itself uses: `flag_value` (the --socket flag) if non-empty,
// else $KMSFS_SOCKET if set and non-empty (read with secure_getenv, so it is ignored in a setuid
// context), else kDefaultSocketPath. kInvalidArgument if the result fails ValidateSocketPath.
Result<std::string> ResolveSocketPath(std::string_view flag_value);
// kInvalidArgument unless 1..kMaxSocketPathLen bytes without NUL and not abstract ('@' or NUL
// first). The message names the path and the limit ("... is 120 bytes; a Unix socket path must be
// at most 107"), because the usual fix is a shorter directory.
Status ValidateSocketPath(std::string_view path);

// All sockets returned below are close-on-exec and nonblocking; use them with WriteFrame/
// ReadFrame (which poll) or with an event loop.

// A listening socket at `path` with file mode `mode` (keyd uses 0666: who may do what is decided
// by key policy on SO_PEERCRED, not by the file mode). An existing *socket* at `path` is removed
// only if nothing answers on it (a stale socket of a dead keyd); if a server answers, or `path` is
// anything but a socket, kAlreadyExists and nothing is touched. The mode is set before listen(),
// so no client can connect while the umask-derived mode is in effect. The parent directory must
// exist and be writable only by keyd's user (systemd RuntimeDirectory=): the stale check and the
// chmod are by path. The caller unlinks `path` on shutdown if it wants to.
Result<UniqueFd> UnixListen(const std::string& path, int backlog, mode_t mode);

// One accepted connection. kUnavailable (ETIMEDOUT) at the deadline; kUnavailable with the errno
// for EMFILE/ENFILE/ENOBUFS/ENOMEM, after which the server should pause accepting briefly rather
// than spin or exit. Aborted handshakes (ECONNABORTED, EPROTO) and EINTR are retried.
Result<UniqueFd> UnixAccept(int listen_fd, Deadline deadline);

// A connection to `path`. ENOENT and ECONNREFUSED (no keyd) fail at once with kUnavailable
// "key service unreachable at PATH"; EAGAIN (keyd alive but its backlog is full) is retried with
// backoff until the deadline, then kUnavailable; EACCES/EPERM is kPermissionDenied. The errno is
// kept in every case.
Result<UniqueFd> UnixConnect(const std::string& path, Deadline deadline);

}  // namespace kmsfs::ipc
