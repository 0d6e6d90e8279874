// kmsfs-keyd as a process: readiness, graceful stop, socket activation, unit files, refusing a
// wrong or unsafe root key, and coming back after SIGKILL.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "common/ipc/keyd_client.h"
#include "tests/catch.h"
#include "tests/integration/harness.h"

namespace kmsfs::it {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

TEST_CASE("keyd becomes READY, answers Ping, and stops gracefully on SIGTERM", "[keyd]") {
  Sandbox box;
  auto keyd = box.StartKeyd();  // returns once READY=1 arrived on our NOTIFY_SOCKET

  // The socket is world-connectable on purpose (policy, not file modes, decides).
  CHECK((ModeOf(box.socket_path()) & 07777) == 0666);
  CHECK(S_ISSOCK(ModeOf(box.socket_path())));

  auto ping = box.Ctl({"ping"});
  INFO(ping.err);
  REQUIRE(ping.exit_code == 0);
  REQUIRE(ping.json.is_object());
  CHECK(ping.json.contains("Version"));

  const auto code = keyd->Stop();
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK(keyd->Notified("STOPPING=1"));
  CHECK_FALSE(Exists(box.socket_path()));  // keyd removes the socket it bound
  CHECK(keyd->Log().find("stopped") != std::string::npos);
  CheckLog(keyd->Log(), {}, {box.root_key_hex()});
}

TEST_CASE("keyd creates a missing socket directory with mode 0755", "[keyd]") {
  Sandbox box;
  const std::string dir = box.Path("run/kmsfs");
  auto keyd = box.StartKeyd(KeydArgs({"--socket", dir + "/keyd.sock"}));
  CHECK((ModeOf(dir) & 07777) == 0755);
  CHECK((ModeOf(box.Path("run")) & 07777) == 0755);
  CHECK(PingLatency(dir + "/keyd.sock").count() < 5'000);
  CHECK(keyd->Stop() == 0);
}

TEST_CASE("keyd takes its root key from a systemd credential first", "[keyd]") {
  Sandbox box;
  const std::string creds = box.Path("creds");
  REQUIRE(::mkdir(creds.c_str(), 0700) == 0);
  const std::string cred_hex = box.MakeKeyFile(creds + "/kmsfs-root-key");
  auto keyd = box.StartKeyd(KeydEnv({"CREDENTIALS_DIRECTORY=" + creds}));
  CHECK(keyd->Log().find("root key from systemd credential") != std::string::npos);
  CHECK(keyd->Stop() == 0);
  CheckLog(keyd->Log(), {}, {cred_hex, box.root_key_hex()});
}

TEST_CASE("keyd serves a socket inherited through systemd-socket-activate", "[keyd][activation]") {
  const std::string activate = RequireTool("systemd-socket-activate");
  Sandbox box;
  // keyd's own --socket points elsewhere: if it were used, a socket would appear there.
  const std::string unused = box.Path("unused.sock");
  Keyd::Options options;
  options.launcher = {activate, "-l", box.socket_path()};
  options.launcher_env_flag = "-E";  // it passes on only the variables named with -E
  options.wait_ready = false;        // systemd-socket-activate execs keyd on the first connection
  auto keyd =
      std::make_unique<Keyd>(box.root(), 1, box.state_dir(), unused, box.root_key_file(), options);
  // Wait for the activator's socket, the way a client would find it.
  for (int i = 0; i < 200 && !Exists(box.socket_path()); ++i) {
    REQUIRE(keyd->running());
    ::usleep(10'000);  // polling for a file created by another process; there is no event
  }
  REQUIRE(Exists(box.socket_path()));
  CHECK(PingLatency(box.socket_path()).count() < 10'000);  // connecting starts keyd
  REQUIRE(keyd->WaitReady(milliseconds(10'000)));
  const std::string log = keyd->Log();
  INFO(log);
  CHECK(log.find("(socket activation)") != std::string::npos);
  CHECK_FALSE(Exists(unused));
  CHECK(keyd->Stop() == 0);
  CheckLog(keyd->Log(), {}, {box.root_key_hex()});
}

TEST_CASE("systemd units pass systemd-analyze verify", "[units]") {
  const std::string analyze = RequireTool("systemd-analyze");
  Sandbox box;
  // verify insists that ExecStart's binary exists; the units name the installed path
  // (/usr/local/bin/kmsfs-keyd), so we verify copies that point at the binary under test.
  for (const char* unit : {"kmsfs-keyd.service", "kmsfs-keyd.socket"}) {
    std::string text = ReadText(SourceDir() + "/systemd/" + unit);
    REQUIRE_FALSE(text.empty());
    text = std::regex_replace(text, std::regex("/usr/local/bin/kmsfs-keyd"), KeydBinary());
    std::ofstream(box.Path(unit)) << text;
  }
  auto r = Run({analyze, "verify", box.Path("kmsfs-keyd.socket"), box.Path("kmsfs-keyd.service")});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("kmsfs-keyd") == std::string::npos);  // no complaint about our units
}

TEST_CASE("keyd refuses a wrong root key with exit code 3 and one clear line", "[keyd][rootkey]") {
  Sandbox box;
  {
    auto keyd = box.StartKeyd();  // seals a fresh state under root.key
    REQUIRE(keyd->Stop() == 0);
  }
  const std::string other = box.Path("other.key");
  const std::string other_hex = box.MakeKeyFile(other);
  auto keyd = box.StartKeyd(NoWait(KeydArgs({"--root-key-file", other})));
  const auto code = keyd->WaitExit(milliseconds(20'000));
  REQUIRE(code.has_value());
  CHECK(*code == 3);
  CHECK_FALSE(keyd->Notified("READY=1"));
  const std::string log = keyd->Log();
  INFO(log);
  CHECK(log.find("kmsfs-keyd: wrong root key: the state in " + box.state_dir() +
                 " was sealed with another root key") != std::string::npos);
  CheckLog(log, {}, {box.root_key_hex(), other_hex});
  // Nothing was touched: the right key still opens the state.
  auto again = box.StartKeyd();
  CHECK(again->Stop() == 0);
}

TEST_CASE("keyd refuses a world-readable root key file with exit code 3", "[keyd][rootkey]") {
  Sandbox box;
  REQUIRE(::chmod(box.root_key_file().c_str(), 0644) == 0);
  auto keyd = box.StartKeyd(NoWait(Keyd::Options{}));
  const auto code = keyd->WaitExit(milliseconds(20'000));
  REQUIRE(code.has_value());
  CHECK(*code == 3);
  const std::string log = keyd->Log();
  INFO(log);
  CHECK(log.find("kmsfs-keyd: root key file " + box.root_key_file() + " has mode 0644") !=
        std::string::npos);
  CHECK(log.find("chmod 600") != std::string::npos);
  CHECK_FALSE(Exists(box.socket_path()));  // refused before listening
  CheckLog(log, {}, {box.root_key_hex()});
}

TEST_CASE("keyd reports usage errors with exit code 2", "[keyd]") {
  Sandbox box;
  auto r = Run({KeydBinary(), "--no-such-option"});
  CHECK(r.exit_code == 2);
  r = Run({KeydBinary(), "--state-dir", box.state_dir(), "--socket", box.socket_path(),
           "--log-level", "loud", "--root-key-file", box.root_key_file()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--log-level") != std::string::npos);
  r = Run({KeydBinary(), "--help"});
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("Exit codes") != std::string::npos);
}

TEST_CASE("a second keyd on a live socket is refused", "[keyd]") {
  Sandbox box;
  auto first = box.StartKeyd();
  const std::string other_state = box.Path("state2");
  Keyd::Options options;
  options.wait_ready = false;
  Keyd second(box.root(), 99, other_state, box.socket_path(), box.root_key_file(), options);
  const auto code = second.WaitExit(milliseconds(20'000));
  REQUIRE(code.has_value());
  CHECK(*code == 1);
  CHECK(second.Log().find("another server is already listening on " + box.socket_path()) !=
        std::string::npos);
  CHECK(PingLatency(box.socket_path()).count() < 5'000);  // the first one is unharmed
  CHECK(first->Stop() == 0);
}

TEST_CASE("keyd killed with SIGKILL restarts and serves on the same path", "[keyd][crash]") {
  Sandbox box;
  ipc::KeydClient client(box.socket_path());  // one long-lived client across the restart
  {
    auto keyd = box.StartKeyd();
    auto r = client.Exchange(ipc::Op::kPing, nlohmann::json::object());
    REQUIRE(r.ok());
    keyd->Kill9();
    CHECK(Exists(box.socket_path()));  // a stale socket is left behind
    auto down = client.Exchange(ipc::Op::kPing, nlohmann::json::object());
    REQUIRE_FALSE(down.ok());
    CHECK(down.error().code() == Code::kUnavailable);
  }
  auto keyd = box.StartKeyd();  // replaces the stale socket
  auto r = client.Exchange(ipc::Op::kPing, nlohmann::json::object());
  INFO((r.ok() ? std::string("ok") : r.error().ToString()));
  CHECK(r.ok());
  CHECK(box.Ctl({"ping"}).exit_code == 0);
  CHECK(keyd->Stop() == 0);
  CheckLog(keyd->Log(), {}, {box.root_key_hex()});
}

TEST_CASE("keyd sends WATCHDOG=1 when the watchdog is enabled", "[keyd]") {
  Sandbox box;
  // WATCHDOG_PID must name keyd itself; the harness execs keyd directly, so its pid is the
  // child's. sd_watchdog_enabled() accepts WATCHDOG_USEC alone (no WATCHDOG_PID) too.
  auto keyd = box.StartKeyd(KeydEnv({"WATCHDOG_USEC=400000"}));
  CHECK(keyd->WaitNotified("WATCHDOG=1", milliseconds(5'000)));
  CHECK(keyd->Stop() == 0);
}

}  // namespace
}  // namespace kmsfs::it
