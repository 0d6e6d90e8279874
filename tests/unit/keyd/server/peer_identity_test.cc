// keyd/server/peer_identity: systemd unit from /proc/PID/cgroup, and who the principal is.
#include "keyd/server/peer_identity.h"

#include <unistd.h>

#include <vector>

#include "tests/catch.h"

namespace kmsfs::keyd {
namespace {

TEST_CASE("UnitFromCgroup finds the system unit", "[server][identity]") {
  CHECK(UnitFromCgroup("0::/system.slice/postgresql.service\n") == "postgresql.service");
  CHECK(UnitFromCgroup("0::/system.slice/system-getty.slice/getty@tty1.service\n") ==
        "getty@tty1.service");
  // Sub-cgroups below a unit belong to the unit (Delegate=yes): they cannot rename it.
  CHECK(UnitFromCgroup("0::/system.slice/docker.service/payload/fake.service\n") ==
        "docker.service");
  CHECK(UnitFromCgroup("0::/user.slice/user-1000.slice/session-3.scope\n") == "session-3.scope");
  CHECK(UnitFromCgroup("0::/init.scope\n") == "init.scope");
}

TEST_CASE("UnitFromCgroup qualifies user units by their manager", "[server][identity]") {
  // A user owns its user@ subtree, so a user unit must never read as a system unit.
  CHECK(UnitFromCgroup("0::/user.slice/user-1000.slice/user@1000.service/app.slice/"
                       "postgresql.service\n") == "user@1000.service/postgresql.service");
  CHECK(UnitFromCgroup("0::/user.slice/user-1000.slice/user@1000.service/init.scope\n") ==
        "user@1000.service/init.scope");
  CHECK(UnitFromCgroup("0::/user.slice/user-1000.slice/user@1000.service\n") ==
        "user@1000.service");
}

TEST_CASE("UnitFromCgroup: no unit, v1 hierarchies, junk", "[server][identity]") {
  CHECK(UnitFromCgroup("0::/\n").empty());
  CHECK(UnitFromCgroup("").empty());
  CHECK(UnitFromCgroup("garbage without colons").empty());
  CHECK(UnitFromCgroup("0::/user.slice\n").empty());
  // Hybrid hierarchy: the name=systemd line names the unit when the v2 line does not.
  CHECK(UnitFromCgroup("12:memory:/foo\n1:name=systemd:/system.slice/cron.service\n0::/\n") ==
        "cron.service");
  // A ':' inside the path is part of the path.
  CHECK(UnitFromCgroup("0::/system.slice/a:b.service\n") == "a:b.service");
}

TEST_CASE("DescribeProcess reads our own executable", "[server][identity]") {
  const Principal p = DescribeProcess(::getuid(), ::getgid(), ::getpid());
  CHECK(p.uid == ::getuid());
  CHECK(p.pid == ::getpid());
  CHECK(p.executable.find("unit_keyd") != std::string::npos);
  // A pid that does not exist is described without executable or unit, never with another's.
  const Principal gone = DescribeProcess(1000, 1000, 0x7ffffff0);
  CHECK(gone.executable.empty());
  CHECK(gone.unit.empty());
}

TEST_CASE("BuildCallerContext honours OnBehalfOf only from trusted peers", "[server][identity]") {
  Principal peer;
  peer.uid = 1000;
  peer.gid = 1000;
  peer.pid = 42;
  peer.executable = "/usr/bin/kmsfs";
  ipc::OnBehalfOf obo;
  obo.uid = 2000;
  obo.gid = 2000;
  obo.pid = 77;
  obo.path = "/alice/notes.txt";
  std::vector<pid_t> described;
  auto describe = [&](uid_t uid, gid_t gid, pid_t pid) {
    described.push_back(pid);
    Principal p;
    p.uid = uid;
    p.gid = gid;
    p.pid = pid;
    p.executable = "/usr/bin/cat";
    return p;
  };

  SECTION("trusted: the forwarded process is the principal, with its path") {
    const CallerContext ctx = BuildCallerContext(peer, obo, /*peer_trusted=*/true, describe);
    REQUIRE(ctx.on_behalf.has_value());
    CHECK(ctx.Effective().uid == 2000);
    CHECK(ctx.Effective().executable == "/usr/bin/cat");
    CHECK(ctx.peer.uid == 1000);
    CHECK(ctx.path == "/alice/notes.txt");
    CHECK_FALSE(ctx.forwarded_ignored);
    CHECK(described == std::vector<pid_t>{77});
  }
  SECTION("untrusted: ignored (and noted), the peer stays the principal") {
    const CallerContext ctx = BuildCallerContext(peer, obo, /*peer_trusted=*/false, describe);
    CHECK_FALSE(ctx.on_behalf.has_value());
    CHECK(ctx.Effective().uid == 1000);
    CHECK(ctx.path.empty());
    CHECK(ctx.forwarded_ignored);
    CHECK(described.empty());
  }
  SECTION("no OnBehalfOf: the peer, nothing ignored") {
    const CallerContext ctx = BuildCallerContext(peer, std::nullopt, true, describe);
    CHECK_FALSE(ctx.on_behalf.has_value());
    CHECK_FALSE(ctx.forwarded_ignored);
  }
}

TEST_CASE("IsTrustedForwarder: root and the configured uids", "[server][identity]") {
  const std::vector<uid_t> trusted = {998};
  CHECK(IsTrustedForwarder(0, {}));
  CHECK(IsTrustedForwarder(998, trusted));
  CHECK_FALSE(IsTrustedForwarder(1000, trusted));
  CHECK_FALSE(IsTrustedForwarder(998, {}));
}

}  // namespace
}  // namespace kmsfs::keyd
