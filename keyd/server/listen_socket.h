// The listening socket keyd serves: inherited from systemd (socket activation) or bound by keyd.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/base/status.h"
#include "common/base/unique_fd.h"

namespace kmsfs::keyd {

struct ListenSocket {
  UniqueFd fd;             // listening, nonblocking, close-on-exec
  std::string path;        // where clients connect (for log lines)
  bool activated = false;  // true: systemd owns the socket file and keeps it across restarts
  // The socket file we created (not activated), so Release() removes only our own file.
  dev_t dev = 0;
  ino_t ino = 0;
};

// When systemd passed sockets for this pid ($LISTEN_FDS/$LISTEN_PID, read and unset by
// sd_listen_fds), exactly one listening AF_UNIX stream socket is expected and used as is; `path`
// is then only a fallback name for logs. kInvalidArgument if systemd passed another number or
// kind of socket (a misconfigured kmsfs-keyd.socket).
//
// Otherwise binds `path` (ipc::UnixListen: a stale socket of a dead keyd is replaced, a live one
// or a non-socket is kAlreadyExists). Missing parent directories are created with mode 0755 —
// clients of every uid must be able to reach the socket. The socket's own mode is 0666 on
// purpose: file modes are not keyd's access control. keyd identifies each peer by SO_PEERCRED
// and decides per request by key policy (default deny), so every local user may *connect*, and
// what they may *do* is the policy's business (docs/threat-model.md, A3).
Result<ListenSocket> AcquireListenSocket(const std::string& path, int backlog);

// Closes the socket and, if keyd bound it itself, removes the socket file — but only if the path
// still names the file we created (a newer keyd may already have replaced it). Best effort.
void ReleaseListenSocket(ListenSocket& socket);

}  // namespace kmsfs::keyd
