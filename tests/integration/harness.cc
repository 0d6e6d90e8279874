#include "tests/integration/harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>

#include "common/base/bytes.h"
#include "common/ipc/deadline.h"
#include "common/ipc/frame.h"
#include "common/ipc/keyd_client.h"
#include "common/ipc/unix_socket.h"
#include "tests/catch.h"

namespace kmsfs::it {
namespace {

using Clock = std::chrono::steady_clock;

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// What Skip() must clean up: it ends the process with _Exit, so no destructor runs.
std::mutex g_live_mu;
std::set<pid_t> g_live_children;         // GUARDED_BY(g_live_mu)
std::set<std::string> g_live_sandboxes;  // GUARDED_BY(g_live_mu)

std::string ReadFileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> BaseEnv(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  const char* path = std::getenv("PATH");
  env.push_back(std::string("PATH=") + (path ? path : "/usr/sbin:/usr/bin:/sbin:/bin"));
  // Sanitizer settings reach the daemons under test (scripts/test.sh: TSan suppressions).
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"}) {
    if (const char* v = std::getenv(name)) env.push_back(std::string(name) + "=" + v);
  }
  // keyd accepts its --test-* flags (shortened lifecycle periods) only in test mode.
  env.push_back("KMSFS_TEST_MODE=1");
  for (const auto& e : extra) env.push_back(e);
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// fork + exec with stdout/stderr to `out_path`/`err_path` (same file allowed). Everything is
// prepared before fork: the child calls only async-signal-safe functions.
pid_t Spawn(std::vector<std::string> argv, std::vector<std::string> env,
            const std::string& out_path, const std::string& err_path) {
  std::vector<char*> cargv = CStrings(argv);
  std::vector<char*> cenv = CStrings(env);
  const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const int err = err_path == out_path
                      ? out
                      : ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(out >= 0);
  REQUIRE(err >= 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(devnull, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execvpe(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  ::close(devnull);
  if (err != out) ::close(err);
  ::close(out);
  return pid;
}

int DecodeStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string Hex(const std::string& bytes) { return HexEncode(AsBytes(bytes)); }

}  // namespace

std::string KeydBinary() { return KMSFS_KEYD_BIN; }
std::string CtlBinary() { return KMSFS_CTL_BIN; }
std::string SourceDir() { return KMSFS_SOURCE_DIR; }

void Skip(const std::string& why) {
  {
    std::lock_guard lock(g_live_mu);
    for (pid_t pid : g_live_children) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    for (const std::string& root : g_live_sandboxes) {
      std::error_code ec;
      std::filesystem::remove_all(root, ec);
    }
  }
  std::fprintf(stderr, "SKIPPED: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(77);
}

std::string RequireTool(const std::string& tool) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = dir + "/" + tool;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  Skip(tool + " is not installed");
}

void RequireOpenFiles(size_t n) {
  rlimit lim{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &lim) == 0);
  if (lim.rlim_cur >= n) return;
  if (lim.rlim_max < n) Skip("RLIMIT_NOFILE hard limit is below " + std::to_string(n));
  lim.rlim_cur = n;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &lim) == 0);
}

Child::Child(const std::vector<std::string>& argv, const std::vector<std::string>& env,
             const std::string& log_path) {
  pid_ = Spawn(argv, BaseEnv(env), log_path, log_path);
  {
    std::lock_guard lock(g_live_mu);
    g_live_children.insert(pid_);
  }
  pidfd_ = UniqueFd(PidfdOpen(pid_));
  REQUIRE(pidfd_.valid());
}

Child::~Child() {
  if (running()) {
    Signal(SIGKILL);
    (void)WaitExit(milliseconds(10'000));
  }
  std::lock_guard lock(g_live_mu);
  g_live_children.erase(pid_);
}

bool Child::running() {
  if (exit_code_) return false;
  return !WaitExit(milliseconds(0)).has_value();
}

std::optional<int> Child::WaitExit(milliseconds timeout) {
  if (exit_code_) return exit_code_;
  pollfd p{pidfd_.get(), POLLIN, 0};
  const auto deadline = ipc::Deadline::After(timeout);
  for (;;) {
    const int r = ::poll(&p, 1, deadline.PollTimeoutMs());
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    break;
  }
  int status = 0;
  if (::waitpid(pid_, &status, 0) != pid_) return std::nullopt;
  exit_code_ = DecodeStatus(status);
  std::lock_guard lock(g_live_mu);
  g_live_children.erase(pid_);
  return exit_code_;
}

void Child::Signal(int sig) {
  if (!exit_code_) ::kill(pid_, sig);
}

RunResult Run(const std::vector<std::string>& argv, const std::vector<std::string>& env,
              milliseconds timeout) {
  char out_tmpl[] = "/tmp/kmsfs-run-out-XXXXXX";
  char err_tmpl[] = "/tmp/kmsfs-run-err-XXXXXX";
  const int out_fd = ::mkstemp(out_tmpl);
  const int err_fd = ::mkstemp(err_tmpl);
  REQUIRE(out_fd >= 0);
  REQUIRE(err_fd >= 0);
  ::close(out_fd);
  ::close(err_fd);
  RunResult r;
  {
    const pid_t pid = Spawn(argv, BaseEnv(env), out_tmpl, err_tmpl);
    UniqueFd pidfd(PidfdOpen(pid));
    REQUIRE(pidfd.valid());
    pollfd p{pidfd.get(), POLLIN, 0};
    int ready;
    do {
      ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
    } while (ready < 0 && errno == EINTR);
    if (ready <= 0) ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.exit_code = DecodeStatus(status);
    INFO("command: " << argv[0] << (argv.size() > 1 ? " " + argv[1] : ""));
    REQUIRE(ready > 0);  // finished in time
  }
  r.out = ReadFileText(out_tmpl);
  r.err = ReadFileText(err_tmpl);
  ::unlink(out_tmpl);
  ::unlink(err_tmpl);
  r.json = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (r.json.is_discarded()) r.json = nullptr;
  return r;
}

std::string InChildOutput(const std::function<std::string()>& fn) {
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string out;
    try {
      out = fn();
    } catch (...) {
      ::_exit(98);  // never unwind into the test runner
    }
    (void)!::write(pipefd[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  return out;
}

int InChild(const std::function<int()>& fn) {
  const std::string out = InChildOutput([&] {
    const int result = fn();
    return std::string(reinterpret_cast<const char*>(&result), sizeof result);
  });
  int result = -1;
  REQUIRE(out.size() == sizeof result);
  std::memcpy(&result, out.data(), sizeof result);
  return result;
}

bool BecomeUser(uid_t uid, gid_t gid) {
  return ::setgroups(0, nullptr) == 0 && ::setresgid(gid, gid, gid) == 0 &&
         ::setresuid(uid, uid, uid) == 0;
}

std::vector<std::string> AsUser(uid_t uid, gid_t gid, std::vector<std::string> argv) {
  std::vector<std::string> out = {"setpriv", "--reuid=" + std::to_string(uid),
                                  "--regid=" + std::to_string(gid), "--clear-groups", "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

Keyd::Keyd(const std::string& root, int serial, const std::string& state_dir,
           const std::string& socket_path, const std::string& root_key_file, Options options)
    : socket_path_(socket_path) {
  const std::string tag = std::to_string(serial);
  log_path_ = root + "/keyd-" + tag + ".log";
  const std::string notify_path = root + "/notify-" + tag + ".sock";
  notify_fd_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  REQUIRE(notify_fd_.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(notify_path.size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, notify_path.c_str(), notify_path.size() + 1);
  REQUIRE(::bind(notify_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);

  std::vector<std::string> argv = options.launcher;
  const std::string notify_env = "NOTIFY_SOCKET=" + notify_path;
  if (!options.launcher_env_flag.empty()) {
    std::vector<std::string> pass = {notify_env};
    for (const auto& e : options.env) pass.push_back(e);
    for (const auto& e : pass) {
      argv.push_back(options.launcher_env_flag);
      argv.push_back(e);
    }
  }
  argv.insert(argv.end(), {KeydBinary(), "--state-dir", state_dir, "--socket", socket_path,
                           "--log-level", "debug"});
  if (!root_key_file.empty()) argv.insert(argv.end(), {"--root-key-file", root_key_file});
  for (const auto& a : options.extra_args) argv.push_back(a);
  std::vector<std::string> env = {notify_env};
  for (const auto& e : options.env) env.push_back(e);
  child_ = std::make_unique<Child>(argv, env, log_path_);
  if (options.wait_ready) {
    const bool ready = WaitReady(options.ready_timeout);
    INFO("keyd log:\n" << Log());
    REQUIRE(ready);
  }
}

Keyd::~Keyd() = default;

void Keyd::DrainNotifications(milliseconds timeout) {
  pollfd p{notify_fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(notify_fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return;
    std::stringstream lines(std::string(buf, static_cast<size_t>(n)));
    std::string line;
    while (std::getline(lines, line)) notifications_.push_back(line);
  }
}

bool Keyd::WaitReady(milliseconds timeout) {
  const auto deadline = ipc::Deadline::After(timeout);
  UniqueFd pidfd(PidfdOpen(child_->pid()));
  for (;;) {
    if (Notified("READY=1")) return true;
    if (deadline.Expired()) return false;
    // Wake on a notification or on keyd's exit, whichever comes first.
    pollfd p[2] = {{notify_fd_.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    const int r = ::poll(p, pidfd.valid() ? 2 : 1, deadline.PollTimeoutMs());
    if (r < 0 && errno != EINTR) return false;
    if (p[0].revents & POLLIN) DrainNotifications(milliseconds(0));
    if (pidfd.valid() && (p[1].revents & POLLIN)) {
      DrainNotifications(milliseconds(0));
      return Notified("READY=1");
    }
  }
}

const std::vector<std::string>& Keyd::notifications() {
  DrainNotifications(milliseconds(0));
  return notifications_;
}

bool Keyd::Notified(std::string_view line) {
  DrainNotifications(milliseconds(0));
  for (const auto& n : notifications_) {
    if (n == line) return true;
  }
  return false;
}

bool Keyd::WaitNotified(std::string_view line, milliseconds timeout) {
  const auto deadline = ipc::Deadline::After(timeout);
  while (!Notified(line)) {
    if (deadline.Expired()) return false;
    DrainNotifications(milliseconds(std::max(1, deadline.PollTimeoutMs())));
  }
  return true;
}

std::optional<int> Keyd::Stop(milliseconds timeout) {
  child_->Signal(SIGTERM);
  return child_->WaitExit(timeout);
}

void Keyd::Kill9() {
  child_->Signal(SIGKILL);
  REQUIRE(child_->WaitExit(milliseconds(10'000)).has_value());
}

size_t Keyd::OpenFds() {
  size_t n = 0;
  const std::string dir = "/proc/" + std::to_string(child_->pid()) + "/fd";
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

std::string Keyd::Log() const { return ReadFileText(log_path_); }

Sandbox::Sandbox() {
  ::signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/kmsfs-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  root_ = tmpl;
  {
    std::lock_guard lock(g_live_mu);
    g_live_sandboxes.insert(root_);
  }
  // Traversable by other uids (tests run clients as uid 1000 through setpriv); what must stay
  // private inside is private by its own mode (state/ 0700, root.key 0600).
  REQUIRE(::chmod(root_.c_str(), 0755) == 0);
  root_key_hex_ = MakeKeyFile(root_key_file());
}

Sandbox::~Sandbox() {
  std::error_code ec;
  std::filesystem::remove_all(root_, ec);
  std::lock_guard lock(g_live_mu);
  g_live_sandboxes.erase(root_);
}

std::string Sandbox::MakeKeyFile(const std::string& path) {
  std::string key(32, '\0');
  {
    std::ifstream rnd("/dev/urandom", std::ios::binary);
    rnd.read(key.data(), static_cast<std::streamsize>(key.size()));
    REQUIRE(rnd.gcount() == 32);
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, key.data(), key.size()) == static_cast<ssize_t>(key.size()));
  ::close(fd);
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  return Hex(key);
}

std::unique_ptr<Keyd> Sandbox::StartKeyd(Keyd::Options options) {
  return std::make_unique<Keyd>(root_, ++serial_, state_dir(), socket_path(), root_key_file(),
                                std::move(options));
}

RunResult Sandbox::Ctl(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  std::vector<std::string> argv = {CtlBinary(), "--socket", socket_path(), "--output", "json"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv, env);
}

void CheckLog(const std::string& log, const std::vector<std::string>& allowed,
              const std::vector<std::string>& secrets) {
  static const std::regex kBad(R"(^\S+ (warning|error|critical) )");
  std::stringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    if (!std::regex_search(line, kBad)) continue;
    // keyd's warning that a --test-* flag is in use: expected, the harness runs it in test mode.
    bool ok = line.find("] TEST MODE: ") != std::string::npos;
    for (const auto& a : allowed) ok = ok || std::regex_search(line, std::regex(a));
    INFO("unexpected log line: " << line);
    CHECK(ok);
  }
  std::string lower = log;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& s : secrets) {
    std::string hex = s;
    for (char& c : hex) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    INFO("secret hex found in the log: " << hex.substr(0, 8) << "...");
    CHECK(lower.find(hex) == std::string::npos);
  }
}

milliseconds PingLatency(const std::string& socket_path) {
  ipc::KeydClient client(socket_path);
  const auto start = Clock::now();
  auto r = client.Exchange(ipc::Op::kPing, nlohmann::json::object());
  const auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  INFO("ping: " << (r.ok() ? std::string("ok") : r.error().ToString()));
  REQUIRE(r.ok());
  REQUIRE(r->ok());
  return took;
}

RawClient::RawClient(const std::string& socket_path) {
  auto fd = ipc::UnixConnect(socket_path, ipc::Deadline::After(milliseconds(5'000)));
  INFO("connect: " << (fd.ok() ? std::string("ok") : fd.error().ToString()));
  REQUIRE(fd.ok());
  fd_ = std::move(fd).value();
}

bool RawClient::Send(std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_.get(), POLLOUT, 0};
      if (::poll(&p, 1, 5'000) <= 0) return false;
      continue;
    }
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::optional<std::string> RawClient::ReadFrame(milliseconds timeout) {
  auto frame = ipc::ReadFrame(fd_.get(), ipc::Deadline::After(timeout));
  if (!frame.ok()) return std::nullopt;
  return std::move(frame).value();
}

bool RawClient::WaitClosed(milliseconds timeout) {
  const auto deadline = ipc::Deadline::After(timeout);
  char buf[4096];
  for (;;) {
    pollfd p{fd_.get(), POLLIN, 0};
    const int r = ::poll(&p, 1, deadline.PollTimeoutMs());
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
  }
}

std::string Frame(std::string_view payload) {
  std::string out(4, '\0');
  PutU32(reinterpret_cast<uint8_t*>(out.data()), static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

}  // namespace kmsfs::it
