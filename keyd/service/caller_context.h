// CallerContext: who is asking keyd, as established by the transport (never by the request body).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kmsfs::keyd {

// One process identity. uid/gid/pid come from the kernel (SO_PEERCRED, or the filesystem's
// fuse_req_ctx for a forwarded caller); executable and unit are read from /proc/PID by the server
// (empty when unknown — policies on them then fail closed).
struct Principal {
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  pid_t pid = 0;
  std::string executable;  // /proc/PID/exe target
  std::string unit;        // systemd unit from /proc/PID/cgroup, e.g. "postgresql.service"
};

struct CallerContext {
  Principal peer;  // the process at the other end of the socket
  // Set only when the peer is a trusted forwarder (root or the configured service user) and the
  // request carried OnBehalfOf: the process that opened the file. Otherwise the peer is the
  // principal and any OnBehalfOf in the request is ignored (and noted in the audit record).
  std::optional<Principal> on_behalf;
  std::string path;    // kmsfs:Path (file path inside the volume), only from a trusted forwarder
  bool forwarded_ignored = false;  // the request carried OnBehalfOf from an untrusted peer

  // The identity that policy evaluates and audit records as the principal.
  const Principal& Effective() const { return on_behalf ? *on_behalf : peer; }
};

}  // namespace kmsfs::keyd
