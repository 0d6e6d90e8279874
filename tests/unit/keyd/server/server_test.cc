// keyd/server's Server in-process, with a recording KmsHandler: who the caller is, how handler
// failures reach the client, graceful stop with a request in flight, and the scheduler hook.
#include "keyd/server/server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "common/ipc/keyd_client.h"
#include "keyd/server/listen_socket.h"
#include "tests/catch.h"

namespace kmsfs::keyd {
namespace {

using std::chrono::milliseconds;

class RecordingHandler final : public KmsHandler {
 public:
  ServiceReply Handle(std::string_view op, const nlohmann::json& /*params*/,
                      const CallerContext& caller) override {
    std::unique_lock lock(mu_);
    last_ = caller;
    ++calls_;
    cv_.notify_all();
    if (op == "Status") throw std::runtime_error("boom");
    if (op == "DescribeKey") return ServiceReply::Error("NoSuchNameException", "made up");
    if (op == "ListKeys") {  // blocks until Release(): a request in flight
      in_flight_ = true;
      cv_.notify_all();
      cv_.wait(lock, [this] { return released_; });
      return ServiceReply{nlohmann::json{{"Keys", nlohmann::json::array()}}, "", ""};
    }
    return ServiceReply{nlohmann::json{{"Version", "test"}}, "", ""};
  }
  CallerContext last() {
    std::lock_guard lock(mu_);
    return last_;
  }
  bool WaitInFlight() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [this] { return in_flight_; });
  }
  void Release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  CallerContext last_;
  int calls_ = 0;
  bool in_flight_ = false;
  bool released_ = false;
};

// A Server on a private socket, run on its own thread.
class Fixture {
 public:
  // `notify_socket`: where sd_notify goes ("" = nowhere); `watchdog_usec`: WatchdogSec= to fake.
  explicit Fixture(ServerOptions options = {}, const std::string& notify_socket = "",
                   const std::string& watchdog_usec = "") {
    ::unsetenv("LISTEN_FDS");
    SetOrUnset("NOTIFY_SOCKET", notify_socket);
    SetOrUnset("WATCHDOG_USEC", watchdog_usec);
    ::unsetenv("WATCHDOG_PID");
    REQUIRE(Server::BlockStopSignals().ok());
    char tmpl[] = "/tmp/kmsfs-srv-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    REQUIRE(::chmod(dir_.c_str(), 0755) == 0);
    auto listener = AcquireListenSocket(socket_path(), 64);
    REQUIRE(listener.ok());
    listener_ = std::move(listener).value();
    auto server = Server::Create(listener_.fd.get(), handler_, std::move(options));
    REQUIRE(server.ok());
    server_ = std::move(server).value();
    thread_ = std::thread([this] { run_status_ = server_->Run(); });
  }
  ~Fixture() {
    (void)Stop();
    ReleaseListenSocket(listener_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  Status Stop() {
    if (thread_.joinable()) {
      server_->Stop();
      thread_.join();
    }
    return run_status_;
  }
  std::string socket_path() const { return dir_ + "/keyd.sock"; }
  RecordingHandler& handler() { return handler_; }

 private:
  static void SetOrUnset(const char* name, const std::string& value) {
    if (value.empty()) {
      ::unsetenv(name);
    } else {
      ::setenv(name, value.c_str(), 1);
    }
  }

  std::string dir_;
  RecordingHandler handler_;
  ListenSocket listener_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  Status run_status_;
};

TEST_CASE("Server: a root peer may forward OnBehalfOf", "[server]") {
  Fixture f;
  ipc::KeydClient client(f.socket_path());
  ipc::OnBehalfOf obo;
  obo.uid = 1234;
  obo.gid = 1234;
  obo.pid = ::getpid();
  obo.path = "/alice/a.txt";
  auto r = client.Exchange(ipc::Op::kPing, nlohmann::json::object(), &obo);
  REQUIRE(r.ok());
  REQUIRE(r->ok());
  const CallerContext ctx = f.handler().last();
  CHECK(ctx.peer.uid == ::getuid());
  CHECK(ctx.peer.pid == ::getpid());
  CHECK(ctx.peer.executable.find("unit_keyd") != std::string::npos);
  REQUIRE(ctx.on_behalf.has_value());
  CHECK(ctx.Effective().uid == 1234);
  CHECK(ctx.path == "/alice/a.txt");
  CHECK_FALSE(ctx.forwarded_ignored);
}

TEST_CASE("Server: OnBehalfOf from an untrusted uid is ignored and noted", "[server]") {
  if (::geteuid() != 0) return;  // needs to switch to uid 1000
  // Fork before any server thread exists; the child waits for the go byte.
  int go[2];
  REQUIRE(::pipe(go) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(go[1]);
    char path[256] = {};
    if (::read(go[0], path, sizeof path - 1) <= 0) ::_exit(10);
    if (::setresgid(1000, 1000, 1000) != 0 || ::setresuid(1000, 1000, 1000) != 0) ::_exit(11);
    ipc::KeydClient client(path);
    ipc::OnBehalfOf obo;  // claims to be root
    obo.uid = 0;
    obo.gid = 0;
    obo.pid = 1;
    obo.path = "/secret";
    auto r = client.Exchange(ipc::Op::kPing, nlohmann::json::object(), &obo);
    ::_exit(r.ok() && r->ok() ? 0 : 12);
  }
  ::close(go[0]);
  Fixture f;
  const std::string path = f.socket_path();
  REQUIRE(::write(go[1], path.c_str(), path.size()) == static_cast<ssize_t>(path.size()));
  ::close(go[1]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const CallerContext ctx = f.handler().last();
  CHECK(ctx.peer.uid == 1000);
  CHECK_FALSE(ctx.on_behalf.has_value());
  CHECK(ctx.Effective().uid == 1000);
  CHECK(ctx.path.empty());
  CHECK(ctx.forwarded_ignored);
}

TEST_CASE("Server: handler failures become KMSInternalException", "[server]") {
  Fixture f;
  ipc::KeydClient client(f.socket_path());
  auto thrown = client.Exchange(ipc::Op::kStatus, nlohmann::json::object());
  REQUIRE(thrown.ok());
  REQUIRE(thrown->error.has_value());
  CHECK(thrown->error->name == "KMSInternalException");
  auto unknown = client.Exchange(ipc::Op::kDescribeKey, nlohmann::json{{"KeyId", "x"}});
  REQUIRE(unknown.ok());
  REQUIRE(unknown->error.has_value());
  CHECK(unknown->error->name == "KMSInternalException");
  // The connection survives both.
  auto ping = client.Exchange(ipc::Op::kPing, nlohmann::json::object());
  REQUIRE(ping.ok());
  CHECK(ping->ok());
}

TEST_CASE("Server: Stop lets the request in flight finish and answers it", "[server]") {
  Fixture f;
  Result<ipc::Response> answer = Error(Code::kInternal, "not yet");
  std::thread client_thread([&] {
    ipc::KeydClient client(f.socket_path());
    answer = client.Exchange(ipc::Op::kListKeys, nlohmann::json::object());
  });
  REQUIRE(f.handler().WaitInFlight());
  std::thread stopper([&] { CHECK(f.Stop().ok()); });
  // Still answering after the stop request: the handler finishes now.
  std::this_thread::sleep_for(milliseconds(50));  // let the stop begin while the request runs
  f.handler().Release();
  client_thread.join();
  stopper.join();
  REQUIRE(answer.ok());
  CHECK(answer->ok());
  CHECK(answer->result.contains("Keys"));
  // And nothing new is accepted.
  ipc::KeydClientOptions quick;
  quick.call_timeout = milliseconds(500);
  ipc::KeydClient late(f.socket_path(), quick);
  CHECK_FALSE(late.Exchange(ipc::Op::kPing, nlohmann::json::object()).ok());
}

TEST_CASE("Server: the scheduler hook runs periodically, one at a time", "[server]") {
  std::mutex mu;
  std::condition_variable cv;
  int runs = 0;
  ServerOptions options;
  options.scheduler_interval = milliseconds(20);
  options.scheduler = [&] {
    std::lock_guard lock(mu);
    ++runs;
    cv.notify_all();
  };
  Fixture f(options);
  std::unique_lock lock(mu);
  CHECK(cv.wait_for(lock, std::chrono::seconds(10), [&] { return runs >= 3; }));
}

// Counts WATCHDOG=1 datagrams arriving on a test-owned NOTIFY_SOCKET within `window`.
int CountWatchdogPings(int fd, milliseconds window) {
  int pings = 0;
  const auto end = std::chrono::steady_clock::now() + window;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return pings;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[512];
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0 && std::string(buf, static_cast<size_t>(n)).find("WATCHDOG=1") != std::string::npos) {
      ++pings;
    }
  }
}

TEST_CASE("Server: the watchdog is withheld while the workers make no progress", "[server]") {
  char tmpl[] = "/tmp/kmsfs-srv-wd-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string notify_path = std::string(tmpl) + "/notify.sock";
  UniqueFd notify(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, notify_path.c_str(), notify_path.size() + 1);
  REQUIRE(::bind(notify.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  {
    Fixture f(ServerOptions{}, notify_path, "100000");  // WatchdogSec=100ms: ping every 50ms
    CHECK(CountWatchdogPings(notify.get(), milliseconds(300)) >= 2);  // healthy
    std::thread client_thread([&] {
      ipc::KeydClient client(f.socket_path());
      (void)client.Exchange(ipc::Op::kListKeys, nlohmann::json::object());  // hangs in the handler
    });
    REQUIRE(f.handler().WaitInFlight());
    (void)CountWatchdogPings(notify.get(), milliseconds(250));  // let a whole WatchdogSec pass
    CHECK(CountWatchdogPings(notify.get(), milliseconds(300)) == 0);  // wedged: no pings
    f.handler().Release();
    client_thread.join();
    CHECK(CountWatchdogPings(notify.get(), milliseconds(300)) >= 2);  // progress again
  }
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  ::unlink(notify_path.c_str());
  ::rmdir(tmpl);
}

}  // namespace
}  // namespace kmsfs::keyd
