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
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/unique_fd.h"
#include "common/crypto/secret.h"
#include "common/ipc/unix_socket.h"
#include "common/log/log.h"
#include "keyd/audit/audit_trail.h"
#include "keyd/policy/system_name_resolver.h"
#include "keyd/server/listen_socket.h"
#include "keyd/server/server.h"
#include "keyd/service/kms_service.h"
#include "keyd/store/maintenance.h"
#include "keyd/store/recovery.h"
#include "keyd/store/root_key.h"

namespace kmsfs::keyd {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
constexpr int kExitStateRefused = 3;
constexpr int kExitStateInUse = 4;  // maintenance commands: a keyd (or another command) holds it

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
  int64_t test_deletion_day_seconds = 86400;  // TEST ONLY (pending windows, ditto)
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
  options.max_pending_window_days =
      std::max(options.max_pending_window_days, options.min_pending_window_days);
  options.default_pending_window_days = options.max_pending_window_days;
  options.min_rotation_period_days = static_cast<uint32_t>(f.min_rotation_period_days);
  options.default_rotation_period_days =
      std::max(options.default_rotation_period_days, options.min_rotation_period_days);
  options.rotation_day_seconds = f.test_rotation_day_seconds;
  options.deletion_day_seconds = f.test_deletion_day_seconds;
  auto clock = [] { return static_cast<int64_t>(::time(nullptr)); };
  KMSFS_ASSIGN_OR_RETURN(
      std::unique_ptr<KmsService> service,
      KmsService::Create(&store, w.audit.get(), w.resolver.get(), clock, std::move(options)));
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

Offline maintenance (keyd stopped; each has --help; docs/lifecycle.md):
  kmsfs-keyd change-root-key --state-dir D --root-key-file OLD --new-root-key-file NEW
  kmsfs-keyd recovery-code   --state-dir D --root-key-file KEY      (prints a recovery code once)
  kmsfs-keyd restore --backup FILE --state-dir EMPTY --root-key-file KEY
  kmsfs-keyd restore --backup FILE --state-dir EMPTY --recovery-code-fd N --new-root-key-file NEW

Exit codes:
  0  stopped on request
  1  runtime error (cannot listen, event loop failure)
  2  usage error
  3  state directory or root key refused (wrong root key, unsafe key file, state from a newer kmsfs,
     or the state is in use by another kmsfs-keyd)
)";
}

// ---- offline maintenance commands (docs/lifecycle.md) ---------------------------------------

struct MaintenanceFlags {
  std::string state_dir = "/var/lib/kmsfs";
  std::string root_key_file;
  int passphrase_fd = -1;
  std::string new_root_key_file;
  int new_passphrase_fd = -1;
  bool new_recovery_code = false;
  std::string backup;
  int recovery_code_fd = -1;
};

RootKeyOptions CurrentRootOptions(const MaintenanceFlags& f) {
  RootKeyOptions o;
  if (const char* creds = std::getenv("CREDENTIALS_DIRECTORY"); creds != nullptr) {
    o.credentials_dir = creds;
  }
  o.key_file = f.root_key_file;
  o.passphrase_fd = f.passphrase_fd;
  return o;
}

// The operator running a maintenance command, for its audit record.
Principal Operator(const char* command) {
  Principal p;
  p.uid = ::getuid();
  p.gid = ::getgid();
  p.pid = ::getpid();
  p.unit = std::string("kmsfs-keyd ") + command;
  return p;
}

struct NewRootKey {
  crypto::RootKey key;
  std::optional<KdfParams> kdf;  // set for a passphrase
  std::string origin;
};

// --new-root-key-file (an existing 32-byte key file, as --root-key-file) or --new-passphrase-fd.
Result<NewRootKey> LoadNewRootKey(const MaintenanceFlags& f) {
  NewRootKey out;
  if (!f.new_root_key_file.empty()) {
    KMSFS_ASSIGN_OR_RETURN(out.key, ReadRootKeyFile(f.new_root_key_file));
    out.origin = "key file " + f.new_root_key_file;
    return out;
  }
  KMSFS_ASSIGN_OR_RETURN(crypto::SecretBytes passphrase, ReadPassphrase(f.new_passphrase_fd));
  if (passphrase.empty()) return Error(Code::kInvalidArgument, "the new passphrase is empty");
  KdfParams kdf = NewKdfParams(crypto::ScryptParams{});
  KMSFS_ASSIGN_OR_RETURN(out.key, DeriveRootKey(passphrase, kdf));
  out.kdf = std::move(kdf);
  out.origin = "passphrase (fd " + std::to_string(f.new_passphrase_fd) + ")";
  return out;
}

// The audit record of a maintenance command, written inside the change's own transaction.
KeyStore::TxnHook AuditInTxn(AuditTrail& trail, const char* command, std::string operation,
                             std::string detail) {
  return [&trail, command, operation = std::move(operation),
          detail = std::move(detail)](WriteTxn& txn) -> Status {
    AuditRecord r;
    r.operation = operation;
    r.principal = Operator(command);
    r.decision = "Allow";
    r.outcome = "Success";
    r.detail = detail;
    return trail.AppendInTxn(txn, std::move(r));
  };
}

// kExitOk, or kExitRuntime after saying so: the escrow is already committed, so a code that did not
// reach stdout (full disk, closed pipe) is lost, and the operator must know to make another.
int PrintRecoveryCode(const RecoveryCode& code) {
  crypto::SecretBytes text = FormatRecoveryCode(code);
  std::fprintf(stderr,
               "kmsfs-keyd: RECOVERY CODE — shown once. Write it down and keep it offline, apart "
               "from the backups. With a backup of keyd's state taken from now on, it restores "
               "the keys without the root key (kmsfs-keyd restore --recovery-code-fd).\n");
  const bool written = std::fwrite(text.data(), 1, text.size(), stdout) == text.size() &&
                       std::fputc('\n', stdout) != EOF && std::fflush(stdout) == 0 &&
                       !std::ferror(stdout);
  if (!written) {
    Fail("the recovery code could not be written; run recovery-code again");
    return kExitRuntime;
  }
  return kExitOk;
}

// Takes the state lock; kExitOk, or the exit code after printing why.
int LockState(const MaintenanceFlags& f, UniqueFd& lock) {
  auto locked = LockStateDir(f.state_dir);
  if (!locked.ok()) {
    Fail(locked.error().message());
    return locked.error().code() == Code::kFailedPrecondition ? kExitStateInUse : kExitRuntime;
  }
  lock = std::move(*locked);
  return kExitOk;
}

// A locked, opened state with its audit trail. Members are destroyed in reverse order: the
// trail before the store it borrows, the lock last.
struct LockedState {
  UniqueFd lock;
  std::unique_ptr<KeyStore> store;
  std::unique_ptr<AuditTrail> trail;
};

// Locks and opens the state with the current root key; kExitOk, or the exit code.
int OpenLockedState(const MaintenanceFlags& f, LockedState& out) {
  if (int rc = LockState(f, out.lock); rc != kExitOk) return rc;
  auto opened = OpenKeyStore(f.state_dir, CurrentRootOptions(f), KeyStore::Options{});
  if (!opened.ok()) {
    Fail(opened.error().message());
    return kExitStateRefused;
  }
  out.store = std::move(opened->store);
  auto trail = AuditTrail::Open(out.store->env());
  if (!trail.ok()) {
    Fail("cannot open the audit trail: " + trail.error().ToString());
    return kExitRuntime;
  }
  out.trail = std::move(*trail);
  return kExitOk;
}

// After a re-seal, rewrites data.mdb compacted: LMDB leaves freed pages as they were, and those
// still hold the material sealed under the old root key — the key one changes because it may have
// leaked. The caller holds the state lock and has closed the store.
int CompactAfterReseal(const std::string& state_dir) {
  Status s = CompactStateDir(state_dir);
  if (!s.ok()) {
    Fail("the change is done, but compacting " + state_dir +
         "/data.mdb failed: its free pages may still hold material sealed under the old root "
         "key: " +
         s.ToString());
    return kExitRuntime;
  }
  std::fprintf(stderr,
               "kmsfs-keyd: %s/data.mdb rewritten without free pages: it no longer holds "
               "material sealed under the old root key. Older backups and copies of the state "
               "still do: destroy them if the old root key may have leaked.\n",
               state_dir.c_str());
  return kExitOk;
}

// Re-seals the state under a new root key. Offline: keyd must be stopped (the state lock).
int ChangeRootKeyCommand(const MaintenanceFlags& f) {
  auto next = LoadNewRootKey(f);
  if (!next.ok()) {
    Fail("new root key: " + next.error().message());
    return kExitUsage;
  }
  LockedState st;
  if (int rc = OpenLockedState(f, st); rc != kExitOk) return rc;
  KeyStore* store = st.store.get();
  AuditTrail* trail = st.trail.get();
  Status s = store->ChangeRootKey(
      next->key, next->kdf,
      AuditInTxn(*trail, "change-root-key", "ChangeRootKey",
                 "every key version re-sealed under a new root key (" + next->origin +
                     "); the old root key no longer opens this state; any recovery code made "
                     "before is void for it"));
  if (!s.ok()) {
    Fail("changing the root key failed, nothing changed: " + s.ToString());
    return kExitRuntime;
  }
  std::fprintf(stderr,
               "kmsfs-keyd: root key changed: the state in %s is now sealed under %s only. "
               "Point keyd at the new key (unit credential / --root-key-file) before starting it. "
               "Backups taken before still need the OLD root key.\n",
               f.state_dir.c_str(), next->origin.c_str());
  std::optional<RecoveryCode> code;
  if (f.new_recovery_code) {
    code.emplace(NewRecoveryCode());
    s = store->SetRecoveryCode(*code, AuditInTxn(*trail, "change-root-key", "CreateRecoveryCode",
                                                 "recovery escrow of the root key replaced"));
    if (!s.ok()) {
      Fail("root key changed, but making the new recovery code failed: " + s.ToString());
      return kExitRuntime;
    }
  }
  st.trail.reset();  // before the store it borrows; the store's Env must close before compacting
  st.store.reset();
  const int compacted = CompactAfterReseal(f.state_dir);
  // The escrow is committed whatever the compaction did: the code must be shown in any case.
  if (code) {
    if (int rc = PrintRecoveryCode(*code); rc != kExitOk) return rc;
  }
  return compacted;
}

int RecoveryCodeCommand(const MaintenanceFlags& f) {
  LockedState st;
  if (int rc = OpenLockedState(f, st); rc != kExitOk) return rc;
  RecoveryCode code = NewRecoveryCode();
  Status s = st.store->SetRecoveryCode(
      code, AuditInTxn(*st.trail, "recovery-code", "CreateRecoveryCode",
                       "recovery escrow of the root key created (replaces any earlier one)"));
  if (!s.ok()) {
    Fail("making the recovery code failed: " + s.ToString());
    return kExitRuntime;
  }
  return PrintRecoveryCode(code);
}

int RestoreCommand(const MaintenanceFlags& f) {
  const bool with_code = f.recovery_code_fd >= 0;
  if (with_code && f.new_root_key_file.empty() && f.new_passphrase_fd < 0) {
    Fail(
        "restore with --recovery-code-fd needs the root key to seal the restored state under: "
        "--new-root-key-file FILE or --new-passphrase-fd N");
    return kExitUsage;
  }
  UniqueFd lock;
  if (int rc = LockState(f, lock); rc != kExitOk) return rc;
  std::optional<RecoveryCode> code;
  std::optional<NewRootKey> next;
  if (with_code) {
    auto text = ReadPassphrase(f.recovery_code_fd);
    if (!text.ok()) {
      Fail("recovery code: " + text.error().message());
      return kExitUsage;
    }
    auto parsed = ParseRecoveryCode(
        std::string_view(reinterpret_cast<const char*>(text->data()), text->size()));
    if (!parsed.ok()) {
      Fail(parsed.error().message());
      return kExitUsage;
    }
    code.emplace(std::move(*parsed));
    auto loaded = LoadNewRootKey(f);
    if (!loaded.ok()) {
      Fail("new root key: " + loaded.error().message());
      return kExitUsage;
    }
    next.emplace(std::move(*loaded));
  }
  std::string how;
  Status s = InstallBackup(
      f.backup, f.state_dir, [&](std::unique_ptr<Env> env) -> Result<std::unique_ptr<KeyStore>> {
        std::unique_ptr<KeyStore> store;
        if (code) {
          KMSFS_ASSIGN_OR_RETURN(crypto::RootKey old_root, KeyStore::RecoverRootKey(*env, *code));
          KMSFS_ASSIGN_OR_RETURN(store, KeyStore::Open(std::move(env), old_root, {}));
          how = "with a recovery code; re-sealed under " + next->origin;
        } else {
          KMSFS_ASSIGN_OR_RETURN(StateInfo info, KeyStore::Probe(*env));
          if (!info.initialized) {
            return Error(Code::kInvalidArgument, f.backup + " is not a kmsfs-keyd state backup");
          }
          KMSFS_ASSIGN_OR_RETURN(LoadedRootKey root, LoadRootKey(CurrentRootOptions(f), info));
          KMSFS_ASSIGN_OR_RETURN(store, KeyStore::Open(std::move(env), root.key, {}));
          how = "with the root key (" + root.origin + ")";
        }
        KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<AuditTrail> trail, AuditTrail::Open(store->env()));
        const std::string detail = "state restored from backup " + f.backup + " " + how;
        if (code) {
          KMSFS_RETURN_IF_ERROR(store->ChangeRootKey(
              next->key, next->kdf, AuditInTxn(*trail, "restore", "RestoreState", detail)));
        } else {
          AuditRecord r;
          r.operation = "RestoreState";
          r.principal = Operator("restore");
          r.decision = "Allow";
          r.outcome = "Success";
          r.detail = detail;
          KMSFS_RETURN_IF_ERROR(trail->Append(std::move(r)));
        }
        // Into data.mdb before it moves: staging's audit.wal is deleted with the staging dir.
        KMSFS_RETURN_IF_ERROR(trail->Flush());
        trail.reset();  // before the store it borrows
        return store;
      });
  if (!s.ok()) {
    Fail("restore failed, " + f.state_dir + " is unchanged: " + s.error().message());
    const Code c = s.error().code();
    return c == Code::kPermissionDenied || c == Code::kCorrupt || c == Code::kNotFound ||
                   c == Code::kFailedPrecondition
               ? kExitStateRefused
               : (c == Code::kInvalidArgument || c == Code::kAlreadyExists ? kExitUsage
                                                                           : kExitRuntime);
  }
  if (code) {  // re-sealed: the staged copy's free pages held the backup's old sealing
    if (int rc = CompactAfterReseal(f.state_dir); rc != kExitOk) return rc;
  }
  std::fprintf(stderr, "kmsfs-keyd: state restored into %s %s. Start keyd%s.\n",
               f.state_dir.c_str(), how.c_str(),
               code ? " with the NEW root key; the recovery code is spent (make a new one with "
                      "kmsfs-keyd recovery-code)"
                    : "");
  return kExitOk;
}

int MaintenanceMain(int argc, char** argv) {
  const std::string command = argv[1];
  MaintenanceFlags f;
  CLI::App app{"kmsfs-keyd " + command +
                   ": offline maintenance of keyd's state (keyd must be "
                   "stopped; see docs/lifecycle.md)",
               "kmsfs-keyd " + command};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.footer(R"(
The current root key comes from the systemd credential kmsfs-root-key, --root-key-file or
--passphrase-fd, as for keyd itself. Exit codes: 0 done, 1 runtime error, 2 usage error,
3 state or key refused (wrong root key or recovery code, not a keyd backup), 4 the state is in use
by a running kmsfs-keyd (stop it first).)");
  app.add_option("--state-dir", f.state_dir, "keyd's state directory")->capture_default_str();
  if (command == "change-root-key") {
    app.description(
        "kmsfs-keyd change-root-key: re-seal every key version under a new root key (no volume "
        "is touched; the old root key stops opening the state)");
  } else if (command == "recovery-code") {
    app.description(
        "kmsfs-keyd recovery-code: make a recovery code (printed once on stdout) that can unseal "
        "the root key kept in this state and in every backup taken afterwards");
  } else {
    app.description(
        "kmsfs-keyd restore: install a `kmsctl backup` file as the state of an empty state "
        "directory, opened with the root key or with a recovery code");
    app.add_option("--backup", f.backup, "the backup file (kmsctl backup FILE)")->required();
    app.add_option("--recovery-code-fd", f.recovery_code_fd,
                   "read the recovery code (first line) from this fd instead of using the root key")
        ->check(CLI::NonNegativeNumber);
  }
  app.add_option("--root-key-file", f.root_key_file, "the current 32-byte root key file");
  app.add_option("--passphrase-fd", f.passphrase_fd, "read the current passphrase from this fd")
      ->check(CLI::NonNegativeNumber);
  if (command != "recovery-code") {
    auto* file = app.add_option("--new-root-key-file", f.new_root_key_file,
                                "the new root key: an existing 32-byte key file, mode 0600");
    auto* fd = app.add_option("--new-passphrase-fd", f.new_passphrase_fd,
                              "the new root key from a passphrase read from this fd")
                   ->check(CLI::NonNegativeNumber);
    file->excludes(fd);
    if (command == "change-root-key") {
      app.add_flag("--new-recovery-code", f.new_recovery_code,
                   "also make a new recovery code for the new root key (printed once)");
    }
  }
  try {
    app.parse(argc - 1, argv + 1);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    return kExitUsage;
  }
  log::Init({log::DetectSink(), spdlog::level::warn, "kmsfs-keyd"});
  if (command == "change-root-key") {
    if (f.new_root_key_file.empty() && f.new_passphrase_fd < 0) {
      Fail("change-root-key needs --new-root-key-file FILE or --new-passphrase-fd N");
      return kExitUsage;
    }
    return ChangeRootKeyCommand(f);
  }
  if (command == "recovery-code") return RecoveryCodeCommand(f);
  return RestoreCommand(f);
}

bool IsMaintenanceCommand(std::string_view arg) {
  return arg == "change-root-key" || arg == "recovery-code" || arg == "restore";
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
  if (argc >= 2 && IsMaintenanceCommand(argv[1])) return MaintenanceMain(argc, argv);

  Flags f;
  CLI::App app{"kmsfs-keyd: the kmsfs key service (runs in the foreground)", "kmsfs-keyd"};
  app.footer(Footer());
  app.set_version_flag("--version", kVersion);
  // A repeated option overrides the earlier one (wrappers append to a unit's command line).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--state-dir", f.state_dir, "keyd's LMDB state directory")->capture_default_str();
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
  app.add_option("--test-deletion-day-seconds", f.test_deletion_day_seconds,
                 "TESTING ONLY: length in seconds of one pending-window 'day' of "
                 "ScheduleKeyDeletion and RetireKeyVersion (never set in production)")
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
  app.add_option("--idle-timeout", f.idle_timeout_s, "seconds before an idle connection is closed")
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

  // The --test-* flags shrink keyd's waiting periods (a 7-day deletion window to seconds). A flag
  // alone would let anyone who can edit the unit file do that unnoticed, so they also need
  // KMSFS_TEST_MODE=1 in the environment (the integration harness sets it), and are logged.
  for (const char* flag : {"--test-rotation-day-seconds", "--test-deletion-day-seconds"}) {
    if (app.count(flag) == 0) continue;
    const char* mode = std::getenv("KMSFS_TEST_MODE");
    if (mode == nullptr || std::string_view(mode) != "1") {
      Fail(std::string(flag) +
           " is for tests only and needs KMSFS_TEST_MODE=1 in the environment; never use it in "
           "production");
      return kExitUsage;
    }
    logger->warn("TEST MODE: {} shortens keyd's lifecycle periods; never use it in production",
                 flag);
  }

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
  // Held while serving: keeps the offline maintenance commands (change-root-key, restore,
  // recovery-code) and a second keyd away from this state (keyd/store/maintenance.h).
  auto state_lock = LockStateDir(f.state_dir);
  if (!state_lock.ok()) {
    Fail(state_lock.error().message());
    return kExitStateRefused;
  }
  auto opened = OpenKeyStore(f.state_dir, root_options, KeyStore::Options{});
  if (!opened.ok()) {
    Fail(opened.error().message());
    return kExitStateRefused;
  }
  std::unique_ptr<KeyStore> store = std::move(opened->store);
  if (crypto::MlockEverFailed()) {
    logger->warn(
        "key memory could not be locked (RLIMIT_MEMLOCK too small): keys stay "
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
