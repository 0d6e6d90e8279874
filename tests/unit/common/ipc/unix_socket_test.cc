#include "common/ipc/unix_socket.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "common/ipc/frame.h"
#include "common/ipc/peer_cred.h"
#include "tests/catch.h"
#include "tests/unit/common/ipc/test_util.h"

namespace kmsfs::ipc {
namespace {

using std::chrono::milliseconds;
using testing::MsSince;
using testing::TempDir;

// Restores an environment variable on scope exit.
class EnvGuard {
 public:
  explicit EnvGuard(const char* name) : name_(name) {
    if (const char* v = ::getenv(name)) old_ = v;
  }
  ~EnvGuard() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST_CASE("ResolveSocketPath: flag, then $KMSFS_SOCKET, then the default", "[ipc][socket]") {
  EnvGuard guard(kSocketEnvVar);
  ::unsetenv(kSocketEnvVar);
  CHECK(*ResolveSocketPath("") == "/run/kmsfs/keyd.sock");
  ::setenv(kSocketEnvVar, "/tmp/env.sock", 1);
  CHECK(*ResolveSocketPath("") == "/tmp/env.sock");
  CHECK(*ResolveSocketPath("/tmp/flag.sock") == "/tmp/flag.sock");
  ::setenv(kSocketEnvVar, "", 1);
  CHECK(*ResolveSocketPath("") == "/run/kmsfs/keyd.sock");
}

TEST_CASE("socket paths must fit sun_path", "[ipc][socket]") {
  const std::string ok = "/" + std::string(kMaxSocketPathLen - 1, 'a');
  CHECK(ValidateSocketPath(ok).ok());
  const std::string too_long = ok + "b";  // 108 bytes
  auto r = ResolveSocketPath(too_long);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kInvalidArgument);
  CHECK(r.error().message().find("at most 107") != std::string::npos);
  CHECK(UnixConnect(too_long, Deadline::After(milliseconds(100))).error().code() ==
        Code::kInvalidArgument);
  CHECK(UnixListen(too_long, 4, 0600).error().code() == Code::kInvalidArgument);
  CHECK_FALSE(ValidateSocketPath("").ok());
  CHECK_FALSE(ValidateSocketPath("@abstract").ok());
  CHECK_FALSE(ValidateSocketPath(std::string_view("/a\0b", 4)).ok());
}

TEST_CASE("listen, connect, accept, exchange a frame", "[ipc][socket]") {
  TempDir dir;
  REQUIRE(dir.ok());
  const std::string path = dir.File("k.sock");
  auto listener = UnixListen(path, 8, 0640);
  REQUIRE(listener.ok());
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0640);

  auto client = UnixConnect(path, Deadline::After(milliseconds(1000)));
  REQUIRE(client.ok());
  auto server = UnixAccept(listener->get(), Deadline::After(milliseconds(1000)));
  REQUIRE(server.ok());
  REQUIRE(WriteFrame(client->get(), "ping", Deadline::After(milliseconds(1000))).ok());
  auto got = ReadFrame(server->get(), Deadline::After(milliseconds(1000)));
  REQUIRE(got.ok());
  CHECK(*got == "ping");

  auto cred = GetPeerCred(server->get());
  REQUIRE(cred.ok());
  CHECK(cred->pid == ::getpid());
  CHECK(cred->uid == ::getuid());
}

TEST_CASE("UnixListen replaces only a stale socket", "[ipc][socket]") {
  TempDir dir;
  REQUIRE(dir.ok());
  const std::string path = dir.File("k.sock");
  SECTION("stale: its listener is gone") {
    { auto first = UnixListen(path, 8, 0666); REQUIRE(first.ok()); }  // closed, file remains
    REQUIRE(::access(path.c_str(), F_OK) == 0);
    auto second = UnixListen(path, 8, 0666);
    REQUIRE(second.ok());
    CHECK(UnixConnect(path, Deadline::After(milliseconds(1000))).ok());
  }
  SECTION("live: another server answers") {
    auto first = UnixListen(path, 8, 0666);
    REQUIRE(first.ok());
    auto second = UnixListen(path, 8, 0666);
    REQUIRE_FALSE(second.ok());
    CHECK(second.error().code() == Code::kAlreadyExists);
    CHECK(UnixConnect(path, Deadline::After(milliseconds(1000))).ok());  // first still serves
  }
  SECTION("not a socket: never touched") {
    { std::ofstream(path) << "precious"; }
    auto r = UnixListen(path, 8, 0666);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kAlreadyExists);
    std::ifstream in(path);
    std::string content;
    in >> content;
    CHECK(content == "precious");
  }
}

TEST_CASE("UnixConnect fails fast and clearly when keyd is not there", "[ipc][socket]") {
  TempDir dir;
  REQUIRE(dir.ok());
  const std::string path = dir.File("k.sock");
  SECTION("no socket file") {
    const auto start = std::chrono::steady_clock::now();
    auto r = UnixConnect(path, Deadline::After(milliseconds(2000)));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kUnavailable);
    CHECK(r.error().sys_errno() == ENOENT);
    CHECK(r.error().message().find("key service unreachable at " + path) != std::string::npos);
    CHECK(MsSince(start) < 500);
  }
  SECTION("stale socket file") {
    { auto l = UnixListen(path, 8, 0666); REQUIRE(l.ok()); }
    auto r = UnixConnect(path, Deadline::After(milliseconds(2000)));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kUnavailable);
    CHECK(r.error().sys_errno() == ECONNREFUSED);
  }
}

TEST_CASE("a full backlog is retried until the deadline, then kUnavailable", "[ipc][socket]") {
  TempDir dir;
  REQUIRE(dir.ok());
  const std::string path = dir.File("k.sock");
  auto listener = UnixListen(path, 0, 0666);  // never accepted from
  REQUIRE(listener.ok());
  std::vector<UniqueFd> queued;
  Result<UniqueFd> last = Error(Code::kInternal, "not run");
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 16; ++i) {
    start = std::chrono::steady_clock::now();
    last = UnixConnect(path, Deadline::After(milliseconds(150)));
    if (!last.ok()) break;
    queued.push_back(std::move(last).value());
  }
  REQUIRE_FALSE(last.ok());
  CHECK(last.error().code() == Code::kUnavailable);
  CHECK(last.error().sys_errno() == ETIMEDOUT);
  CHECK(MsSince(start) >= 145);
  CHECK(MsSince(start) < 1500);
}

TEST_CASE("UnixAccept honours its deadline", "[ipc][socket]") {
  TempDir dir;
  REQUIRE(dir.ok());
  auto listener = UnixListen(dir.File("k.sock"), 8, 0666);
  REQUIRE(listener.ok());
  const auto start = std::chrono::steady_clock::now();
  auto r = UnixAccept(listener->get(), Deadline::After(milliseconds(100)));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kUnavailable);
  CHECK(MsSince(start) >= 95);
}

TEST_CASE("peer credentials over a socketpair are our own", "[ipc][peercred]") {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  UniqueFd a(fds[0]), b(fds[1]);
  auto cred = GetPeerCred(a.get());
  REQUIRE(cred.ok());
  CHECK(cred->pid == ::getpid());
  CHECK(cred->uid == ::getuid());
  CHECK(cred->gid == ::getgid());

  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  UniqueFd p0(pipe_fds[0]), p1(pipe_fds[1]);
  CHECK_FALSE(GetPeerCred(p0.get()).ok());
}

TEST_CASE("ExecutableOf names our binary and notices a dead process", "[ipc][peercred]") {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self);
  REQUIRE(n > 0);
  auto exe = ExecutableOf(::getpid());
  REQUIRE(exe.ok());
  CHECK(*exe == std::string(self, static_cast<size_t>(n)));

  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  auto gone = ExecutableOf(child);
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.error().code() == Code::kNotFound);

  CHECK(ExecutableOf(0).error().code() == Code::kInvalidArgument);
}

}  // namespace
}  // namespace kmsfs::ipc
