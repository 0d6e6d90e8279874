// The integration harness: a private temp root per test, the real kmsfs-keyd started through its
// production readiness path (NOTIFY_SOCKET), the real kmsctl, raw socket clients, log checks.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/unique_fd.h"

namespace kmsfs::it {

using std::chrono::milliseconds;

// Binaries under test (compile definitions from tests/integration/CMakeLists.txt).
std::string KeydBinary();
std::string CtlBinary();
std::string SourceDir();

// Ends the test executable with exit code 77, which CTest reports as skipped (SKIP_RETURN_CODE;
// Catch2 v2 has no SKIP). For missing tools or features, never for failures. Destructors do not
// run, so it first kills every Child still running and removes every live Sandbox.
[[noreturn]] void Skip(const std::string& why);
// Skip() unless `tool` is found in $PATH. Returns its path.
std::string RequireTool(const std::string& tool);

// Raises RLIMIT_NOFILE's soft limit to at least `n` (up to the hard limit); Skip() if impossible.
void RequireOpenFiles(size_t n);

// A finished child process.
struct RunResult {
  int exit_code = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
  nlohmann::json json;  // stdout parsed when it is JSON; null otherwise
};

// Runs argv to completion with a clean environment (PATH plus `env`), stdout and stderr captured.
// Fails the test (REQUIRE) if it does not finish within `timeout` (the child is killed).
RunResult Run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
              milliseconds timeout = milliseconds(30'000));

// Runs `fn` in a forked child (for system calls made under another identity: the child may
// BecomeUser, drop capabilities, ...) and returns the bytes it returned. REQUIREs that the child
// exited 0: `fn` may end it otherwise (_exit) to fail the test, and an exception it throws ends
// the child with 98 instead of unwinding into the test runner.
std::string InChildOutput(const std::function<std::string()>& fn);
// The same for an int result, e.g. 0 or an errno.
int InChild(const std::function<int()>& fn);

// For a forked child: drops to uid/gid with no supplementary groups. False (errno set) if not.
bool BecomeUser(uid_t uid, gid_t gid);

// argv prefixed with setpriv so that it runs as uid/gid with no supplementary groups.
std::vector<std::string> AsUser(uid_t uid, gid_t gid, std::vector<std::string> argv);

// A started child. The destructor SIGKILLs it if it still runs (a failed test leaves no daemon).
class Child {
 public:
  // stdout and stderr go to `log_path`. Environment: PATH plus `env`.
  Child(const std::vector<std::string>& argv, const std::vector<std::string>& env,
        const std::string& log_path);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // The exit code (128 + signal if killed) once it exits, or nullopt at the timeout.
  std::optional<int> WaitExit(milliseconds timeout);
  void Signal(int sig);

 private:
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  std::optional<int> exit_code_;
};

// One kmsfs-keyd under test, started with NOTIFY_SOCKET at a datagram socket owned by the test.
class Keyd {
 public:
  struct Options {
    std::vector<std::string> extra_args;  // appended to keyd's command line
    std::vector<std::string> env;         // extra environment
    std::vector<std::string> launcher;    // e.g. {"systemd-socket-activate", "-l", PATH}
    // Set when the launcher does not pass its environment on (systemd-socket-activate: "-E"):
    // each variable is then given to it as `launcher_env_flag VAR=VALUE`.
    std::string launcher_env_flag;
    bool wait_ready = true;
    milliseconds ready_timeout{20'000};
  };

  Keyd(const std::string& root, int serial, const std::string& state_dir,
       const std::string& socket_path, const std::string& root_key_file, Options options);
  ~Keyd();

  // Blocks until READY=1 arrives (true) or keyd exits or the timeout passes (false).
  bool WaitReady(milliseconds timeout);
  // All sd_notify messages received so far (each "A=1\nB=2" split into lines).
  const std::vector<std::string>& notifications();
  bool Notified(std::string_view line);
  // Waits until `line` has been notified (true) or the timeout passes (false).
  bool WaitNotified(std::string_view line, milliseconds timeout);
  // SIGTERM, then the exit code (nullopt if it did not exit within `timeout`).
  std::optional<int> Stop(milliseconds timeout = milliseconds(15'000));
  void Kill9();
  std::optional<int> WaitExit(milliseconds timeout) { return child_->WaitExit(timeout); }
  pid_t pid() const { return child_->pid(); }
  bool running() { return child_->running(); }
  // Open file descriptors of the keyd process (leak checks).
  size_t OpenFds();
  // Everything keyd wrote to stdout/stderr.
  std::string Log() const;
  const std::string& socket_path() const { return socket_path_; }

 private:
  void DrainNotifications(milliseconds timeout);
  std::string socket_path_;
  std::string log_path_;
  UniqueFd notify_fd_;
  std::unique_ptr<Child> child_;
  std::vector<std::string> notifications_;
};

// Shorthands for Keyd::Options (designated initializers would trip -Wmissing-field-initializers).
inline Keyd::Options KeydArgs(std::vector<std::string> args) {
  Keyd::Options o;
  o.extra_args = std::move(args);
  return o;
}
inline Keyd::Options KeydEnv(std::vector<std::string> env) {
  Keyd::Options o;
  o.env = std::move(env);
  return o;
}
// The same options, but StartKeyd returns at once instead of waiting for READY=1.
inline Keyd::Options NoWait(Keyd::Options o) {
  o.wait_ready = false;
  return o;
}

// A private root /tmp/kmsfs-XXXXXX (short: sun_path is 108 bytes) holding state/, a 0600 root
// key, keyd.sock and logs. Removed, with everything started from it, at the end of the test.
class Sandbox {
 public:
  Sandbox();
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  const std::string& root() const { return root_; }
  std::string Path(std::string_view name) const { return root_ + "/" + std::string(name); }
  std::string state_dir() const { return Path("state"); }
  std::string socket_path() const { return Path("keyd.sock"); }
  std::string root_key_file() const { return Path("root.key"); }
  // Hex of the root key: must never appear in a log.
  const std::string& root_key_hex() const { return root_key_hex_; }
  // Writes a new random 32-byte key file (mode 0600) at `path`; returns its hex.
  std::string MakeKeyFile(const std::string& path);

  // Starts keyd on this sandbox's state, socket and root key (plus options).
  std::unique_ptr<Keyd> StartKeyd(Keyd::Options options = {});
  // kmsctl --socket <ours> --output json ARGS...
  RunResult Ctl(const std::vector<std::string>& args, const std::vector<std::string>& env = {});

 private:
  std::string root_;
  std::string root_key_hex_;
  int serial_ = 0;
};

// Fails the test (CHECK) for every warning/error line in `log` that matches none of `allowed`
// (ECMAScript regexes), and for any `secrets` hex (case-insensitive) found in it.
void CheckLog(const std::string& log, const std::vector<std::string>& allowed = {},
              const std::vector<std::string>& secrets = {});

// A well-behaved client's round trip: connect + Ping on a fresh KeydClient. REQUIREs success.
milliseconds PingLatency(const std::string& socket_path);

// A raw stream connection for misbehaving on purpose.
class RawClient {
 public:
  explicit RawClient(const std::string& socket_path);  // REQUIREs the connect
  int fd() const { return fd_.get(); }
  // Sends all of `bytes`; false if the peer is gone.
  bool Send(std::string_view bytes);
  // One frame's payload, or nullopt on EOF/error/timeout.
  std::optional<std::string> ReadFrame(milliseconds timeout);
  // True once the server closed the connection (EOF or reset) within `timeout`; bytes before the
  // EOF are discarded.
  bool WaitClosed(milliseconds timeout);

 private:
  UniqueFd fd_;
};

// 4-byte big-endian length header + payload.
std::string Frame(std::string_view payload);

}  // namespace kmsfs::it
