// Who a connection speaks for: the peer's kernel identity (SO_PEERCRED), its executable and
// systemd unit from /proc, and the CallerContext a request gets from that and its OnBehalfOf.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/ipc/message.h"
#include "keyd/service/caller_context.h"

namespace kmsfs::keyd {

// The systemd unit of a process, from the text of /proc/PID/cgroup; "" when there is none (not
// under systemd, the root cgroup, a kernel thread). Uses the cgroup v2 line "0::/..." (or, on a
// hybrid hierarchy, "N:name=systemd:/...").
//
// The *first* unit component of the path (".service" or ".scope") is the unit: PID 1 created it,
// and no process can move itself above its own subtree. Anything deeper is delegated to the
// unit's own processes, who may name sub-cgroups as they like ("docker.service/payload" is
// docker.service). One exception, so that "user units too" cannot impersonate system units:
// below a user manager ("user@1000.service") the innermost unit is reported qualified by the
// manager, "user@1000.service/foo.service" — a user controls their whole user@ subtree, so a
// name there proves only "some unit of uid 1000", and a policy for system "foo.service" must not
// match it.
//   0::/system.slice/postgresql.service                              -> postgresql.service
//   0::/user.slice/user-1000.slice/user@1000.service/app.slice/a.service
//                                                                    -> user@1000.service/a.service
//   0::/user.slice/user-1000.slice/session-3.scope                   -> session-3.scope
std::string UnitFromCgroup(std::string_view proc_cgroup_text);

// A Principal for (uid, gid, pid) with `executable` (ipc::ExecutableOf) and `unit` read from
// /proc/PID. Either stays "" when it cannot be read (the process exited, EACCES without
// CAP_SYS_PTRACE): policies on it then fail closed. Both reads are checked against a pidfd, so a
// recycled pid is never described as the old process. Never fails; thread-safe.
Principal DescribeProcess(uid_t uid, gid_t gid, pid_t pid);

// uid 0 is always trusted to forward; `trusted_uids` adds others (--trusted-uid, e.g. a dedicated
// filesystem service user).
bool IsTrustedForwarder(uid_t uid, std::span<const uid_t> trusted_uids);

using ProcessDescriber = std::function<Principal(uid_t, gid_t, pid_t)>;

// The CallerContext of one request from `peer`. With `on_behalf_of` from a trusted forwarder, the
// forwarded process (described by `describe`) is the principal and its Path is kept. From anyone
// else the field never grants an identity: the peer stays the principal and forwarded_ignored is
// set, for the audit record (docs/protocol.md §4).
CallerContext BuildCallerContext(const Principal& peer,
                                 const std::optional<ipc::OnBehalfOf>& on_behalf_of,
                                 bool peer_trusted, const ProcessDescriber& describe);

}  // namespace kmsfs::keyd
