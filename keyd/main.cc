// kmsfs-keyd: the key service's composition root — parses the command line, opens the state with
// the root key, wires store, audit, policy and service to the socket server, and serves.
//
// Exit codes (documented in --help):
//   0  stopped on request (SIGTERM/SIGINT)
//   1  runtime error (cannot listen, event loop failure, ...)
//   2  usage error (bad or missing option)
//   3  the state directory or the root key was refused (wrong key, unsafe key file, newer state)
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "common/crypto/secret.h"
#include "common/ipc/unix_socket.h"
#include "common/log/log.h"
#include "keyd/server/listen_socket.h"
#include "keyd/server/server.h"
#include "keyd/audit/audit_trail.h"
#include "keyd/policy/system_name_resolver.h"
#include "keyd/service/kms_service.h"
#include "keyd/store/root_key.h"

namespace kmsfs::keyd {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
constexpr int kExitStateRefused = 3;

constexpr char kVersion[] = "0.1.0";

struct Flags {
  std::string state_dir = "/var/lib/kmsfs";
  std::string socket;
  std::string root_key_file;
  int passphrase_fd = -1;
  std::vector<uid_t> trusted_uids;
  std::string log_level = "info";
  int min_pending_window_days = 7;
  int min_rotation_period_days = 90;
  int64_t test_rotation_day_seconds = 86400;  // TEST ONLY (see KmsService::Options)
  double scheduler_interval_s = 60;
  bool require_mlock = false;
  size_t workers = 8;
  size_t max_connections = 4096;
  size_t max_connections_per_uid = 1024;
  double idle_timeout_s = 60;
  double frame_timeout_s = 5;
};

std::chrono::milliseconds Ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

// One line on stderr, before (or instead of) the logger: what an operator reads when startup fails.
void Fail(const std::string& message) { std::fprintf(stderr, "kmsfs-keyd: %s\n", message.c_str()); }

struct Wiring {
  // Declared before `handler`, so they are destroyed after it: the service borrows them.
  std::unique_ptr<NameResolver> resolver;
  std::unique_ptr<AuditSink> audit;
  std::unique_ptr<KmsHandler> handler;
  std::function<void()> scheduler;  // the service's rotation/deletion pass; empty: none
};

// The key service over `store`: policies resolve names through NSS, the audit trail lives in the
// same LMDB environment, and the server's scheduler runs the rotation/deletion pass.
Result<Wiring> MakeHandler(KeyStore& store, const Flags& f) {
  Wiring w;
  w.resolver = std::make_unique<SystemNameResolver>();
  // The hash-chained, group-committed trail (docs/audit.md): the service's sink and, for
  // ListAudit/VerifyAudit/..., its reader. Destroyed (with `w`) before the store.
  KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<AuditTrail> audit, AuditTrail::Open(store.env()));
  AuditTrail* trail = audit.get();
  w.audit = std::move(audit);
  KmsService::Options options;
  options.audit_reader = trail;
  options.version = kVersion;
  options.min_pending_window_days = static_cast<uint32_t>(f.min_pending_window_days);
  options.max_pending_window_days = std::max(options.max_pending_window_days,
                                             options.min_pending_window_days);
  options.default_pending_window_days = options.max_pending_window_days;
  options.min_rotation_period_days = static_cast<uint32_t>(f.min_rotation_period_days);
  options.default_rotation_period_days = std::max(options.default_rotation_period_days,
                                                  options.min_rotation_period_days);
  options.rotation_day_seconds = f.test_rotation_day_seconds;
  auto clock = [] { return static_cast<int64_t>(::time(nullptr)); };
  KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<KmsService> service,
                         KmsService::Create(&store, w.audit.get(), w.resolver.get(), clock,
                                            std::move(options)));
  KmsService* svc = service.get();
  w.scheduler = [svc, clock] {
    const KmsService::ScheduledWorkReport r = svc->RunScheduledWork(clock());
    for (const std::string& failure : r.failed) {
      log::Get("keyd")->error("scheduled rotation/deletion failed (retried next pass): {}",
                              failure);
    }
  };
  w.handler = std::move(service);
  return w;
}

std::string Footer() {
  return R"(
The root key protects keyd's state at rest. It comes from, in this order:
  1. the systemd credential kmsfs-root-key ($CREDENTIALS_DIRECTORY; LoadCredentialEncrypted=),
  2. --root-key-file FILE: exactly 32 random bytes, mode 0600 (head -c 32 /dev/urandom > FILE),
  3. --passphrase-fd N: the first line read from fd N, stretched with scrypt.
The socket is inherited from systemd when socket-activated (kmsfs-keyd.socket); otherwise keyd
binds --socket, else $KMSFS_SOCKET, else /run/kmsfs/keyd.sock (mode 0666: access is decided by
key policy on each caller's SO_PEERCRED identity, not by file modes).
Signals: SIGTERM/SIGINT stop gracefully (in-flight requests finish).

Exit codes:
  0  stopped on request
  1  runtime error (cannot listen, event loop failure)
  2  usage error
  3  state directory or root key refused (wrong root key, unsafe key file, state from a newer kmsfs)
)";
}

int Main(int argc, char** argv) {
  // First thing: not dumpable, no core files — before any secret exists.
  if (Status s = crypto::HardenProcess(); !s.ok()) {
    Fail("cannot harden the process: " + s.ToString());
    return kExitRuntime;
  }
  // Before any thread exists, so every thread inherits the mask and the server's signalfd sees
  // SIGTERM/SIGINT. SIGPIPE: every send uses MSG_NOSIGNAL, but nothing else should kill us either.
  if (Status s = Server::BlockStopSignals(); !s.ok()) {
    Fail(s.ToString());
    return kExitRuntime;
  }
  ::signal(SIGPIPE, SIG_IGN);

  Flags f;
  CLI::App app{"kmsfs-keyd: the kmsfs key service (runs in the foreground)", "kmsfs-keyd"};
  app.footer(Footer());
  app.set_version_flag("--version", kVersion);
  // A repeated option overrides the earlier one (wrappers append to a unit's command line).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--state-dir", f.state_dir, "keyd's LMDB state directory")
      ->capture_default_str();
  app.add_option("--socket", f.socket,
                 "socket path when not socket-activated (default: $KMSFS_SOCKET, else "
                 "/run/kmsfs/keyd.sock)");
  app.add_option("--root-key-file", f.root_key_file, "file holding the 32-byte root key");
  app.add_option("--passphrase-fd", f.passphrase_fd, "read a root key passphrase from this fd")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--trusted-uid", f.trusted_uids,
                 "uid besides 0 whose OnBehalfOf (forwarded caller) is honoured; repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--log-level", f.log_level, "trace|debug|info|warn|error|off")
      ->capture_default_str();
  app.add_option("--min-pending-window-days", f.min_pending_window_days,
                 "smallest PendingWindowInDays ScheduleKeyDeletion accepts")
      ->check(CLI::Range(1, 365))
      ->capture_default_str();
  app.add_option("--min-rotation-period-days", f.min_rotation_period_days,
                 "smallest RotationPeriodInDays EnableKeyRotation accepts")
      ->check(CLI::Range(1, 2560))
      ->capture_default_str();
  app.add_option("--test-rotation-day-seconds", f.test_rotation_day_seconds,
                 "TESTING ONLY: length in seconds of one rotation 'day' (never set in production)")
      ->check(CLI::Range(int64_t{1}, int64_t{86400}))
      ->capture_default_str();
  app.add_option("--scheduler-interval", f.scheduler_interval_s,
                 "seconds between rotation/deletion passes (0: never)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  app.add_flag("--require-mlock", f.require_mlock,
               "exit instead of warning when key memory cannot be locked (RLIMIT_MEMLOCK)");
  app.add_option("--workers", f.workers, "request worker threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--max-connections", f.max_connections, "connections served at once")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-connections-per-uid", f.max_connections_per_uid,
                 "connections per uid (uid 0 and --trusted-uid are exempt)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--idle-timeout", f.idle_timeout_s,
                 "seconds before an idle connection is closed")
      ->check(CLI::Range(0.05, 86400.0))
      ->capture_default_str();
  app.add_option("--frame-timeout", f.frame_timeout_s,
                 "seconds a client may take to send one whole request frame")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    return kExitUsage;
  }

  spdlog::level::level_enum level;
  if (!log::ParseLevel(f.log_level, &level)) {
    Fail("--log-level must be one of trace, debug, info, warn, error, off");
    return kExitUsage;
  }
  log::Init({log::DetectSink(), level, "kmsfs-keyd"});
  auto logger = log::Get("keyd");
  crypto::SetRequireMlock(f.require_mlock);

  auto socket_path = ipc::ResolveSocketPath(f.socket);
  if (!socket_path.ok()) {
    Fail(socket_path.error().message());
    return kExitUsage;
  }

  RootKeyOptions root_options;
  if (const char* creds = std::getenv("CREDENTIALS_DIRECTORY"); creds != nullptr) {
    root_options.credentials_dir = creds;
  }
  root_options.key_file = f.root_key_file;
  root_options.passphrase_fd = f.passphrase_fd;
  auto opened = OpenKeyStore(f.state_dir, root_options, KeyStore::Options{});
  if (!opened.ok()) {
    Fail(opened.error().message());
    return kExitStateRefused;
  }
  std::unique_ptr<KeyStore> store = std::move(opened->store);
  if (crypto::MlockEverFailed()) {
    logger->warn("key memory could not be locked (RLIMIT_MEMLOCK too small): keys stay "
                 "undumpable but may be swapped; raise LimitMEMLOCK= or use --require-mlock");
  }

  auto wired = MakeHandler(*store, f);
  if (!wired.ok()) {
    Fail("cannot start the key service: " + wired.error().ToString());
    return kExitRuntime;
  }
  Wiring wiring = std::move(*wired);

  auto listener = AcquireListenSocket(*socket_path, SOMAXCONN);
  if (!listener.ok()) {
    Fail(listener.error().message());
    return kExitRuntime;
  }

  ServerOptions options;
  options.workers = f.workers;
  options.max_connections = f.max_connections;
  options.max_connections_per_uid = f.max_connections_per_uid;
  options.idle_timeout = Ms(f.idle_timeout_s);
  options.frame_timeout = Ms(f.frame_timeout_s);
  options.trusted_uids = f.trusted_uids;
  options.scheduler = wiring.scheduler;
  options.scheduler_interval = Ms(f.scheduler_interval_s);
  options.ready_status = "serving on " + listener->path;
  auto server = Server::Create(listener->fd.get(), *wiring.handler, options);
  if (!server.ok()) {
    Fail(server.error().ToString());
    ReleaseListenSocket(*listener);
    return kExitRuntime;
  }
  logger->info("kmsfs-keyd {} serving on {}{}; state {}; root key from {} {}", kVersion,
               listener->path, listener->activated ? " (socket activation)" : "", f.state_dir,
               RootKeySourceName(opened->source), opened->origin);

  Status ran = (*server)->Run();  // READY=1 ... STOPPING=1
  ReleaseListenSocket(*listener);
  server->reset();
  wiring.handler.reset();  // the service before the resolver and audit sink it borrows
  wiring = Wiring{};
  store.reset();  // closes LMDB after every request is done
  if (!ran.ok()) {
    logger->error("stopped on an error: {}", ran.ToString());
    return kExitRuntime;
  }
  logger->info("stopped");
  return kExitOk;
}

}  // namespace
}  // namespace kmsfs::keyd

int main(int argc, char** argv) {
  try {
    return kmsfs::keyd::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kmsfs-keyd: fatal: %s\n", e.what());
    return 1;
  }
}
