// kmsfs / mount.kmsfs: the filesystem's composition root — command line, keyd client, volume,
// mount, daemonizing and systemd readiness.
//
//   kmsfs init --key-id KEY [--socket S] CIPHERDIR
//   kmsfs fsck [--repair] [--socket S] CIPHERDIR     (exit codes as e2fsck: docs/fsck.md)
//   kmsfs info [--versions [--json]] CIPHERDIR
//   kmsfs rewrap [--jobs N] [--rate FILES/S] [--dry-run] [--socket S] CIPHERDIR
//   kmsfs reencrypt PATH...                           (files inside a kmsfs mount)
//   kmsfs retire-version --key-id K --key-version N [--force] CIPHERDIR...
//   kmsfs mount [-f] [-d] [-o OPTS]... [--socket S] CIPHERDIR MOUNTPOINT
//   mount.kmsfs CIPHERDIR MOUNTPOINT [-o OPTS] [-n] [-s] [-v] [-f = fake]   (mount(8) helper)
//   kmsfs CIPHERDIR MOUNTPOINT -o OPTS                (what mount.fuse3 runs for fuse.kmsfs)
//
// Exit codes: 0 success; 2 usage; otherwise the kmsctl table of docs/errors.md for the error
// that stopped us (3 not found, 4 access denied, 5 key unavailable, 6 corrupt, 7 keyd down,
// 1 anything else).
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/base/unique_fd.h"
#include "common/crypto/secret.h"
#include "common/ipc/errors.h"
#include "common/ipc/keyd_client.h"
#include "common/ipc/unix_socket.h"
#include "common/log/log.h"
#include "fs/core/volume.h"
#include "fs/fsck/fsck.h"
#include "fs/fuse/mount.h"
#include "fs/fuse/mount_options.h"
#include "fs/keysource/keyd_data_key_source.h"
#include "fs/lifecycle/keyd_wrap_service.h"
#include "fs/lifecycle/progress.h"
#include "fs/lifecycle/reencrypt.h"
#include "fs/lifecycle/rewrap.h"
#include "fs/lifecycle/volume_scan.h"

namespace kmsfs {
namespace {

constexpr int kExitUsage = 2;

int Fail(std::string_view what, const Error& e) {
  std::cerr << "kmsfs: " << what << ": " << e.message() << "\n";
  return ipc::ExitCodeForCode(e.code());
}

// The filesystem acting for itself (mount, init): pid 0 tells the key source that nobody is
// acted for, so keyd decides on our own SO_PEERCRED identity — the invoking user.
fs::Requester Self() {
  fs::Requester who;
  who.uid = ::getuid();
  who.gid = ::getgid();
  who.pid = 0;
  return who;
}

struct KeydConfig {
  std::string socket_flag;  // --socket, or socket= from -o
  std::optional<std::chrono::milliseconds> timeout;
  std::optional<uid_t> keyd_uid;
};

Result<std::unique_ptr<ipc::KeydClient>> MakeClient(const KeydConfig& c) {
  KMSFS_ASSIGN_OR_RETURN(std::string socket, ipc::ResolveSocketPath(c.socket_flag));
  ipc::KeydClientOptions options;
  // We receive plaintext DEKs over this socket: only a keyd running as the expected user may
  // hand them out (root by default, keyd_uid= otherwise), never an impostor at the path.
  options.expected_server_uid = c.keyd_uid.value_or(0);
  if (c.timeout) {
    // Every key request (each open) fails after this long when keyd hangs: never a hang.
    options.call_timeout = *c.timeout;
    options.connect_timeout = std::min(options.connect_timeout, *c.timeout);
  }
  return std::make_unique<ipc::KeydClient>(std::move(socket), options);
}

Result<std::string> RealPath(const std::string& path, const char* what) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return Error::FromErrno(std::string(what) + " " + path, errno);
  std::string out(resolved);
  ::free(resolved);
  return out;
}

int RunInit(const std::string& key_id, const KeydConfig& keyd, const std::string& cipherdir) {
  auto client = MakeClient(keyd);
  if (!client.ok()) return Fail("init", client.error());
  fs::KeydDataKeySource keys(client->get());
  auto volume = fs::Volume::Create(cipherdir, key_id, &keys, Self());
  if (!volume.ok()) return Fail("init " + cipherdir, volume.error());
  std::cout << HexEncode((*volume)->id()) << "\n";
  return 0;
}

int RunInfo(const std::string& cipherdir) {
  auto config = fs::Volume::ReadConfigUnverified(cipherdir);
  if (!config.ok()) return Fail("info " + cipherdir, config.error());
  std::string features;
  for (const auto& f : config->features) features += (features.empty() ? "" : " ") + f;
  std::cout << "Format:    " << config->format << "\n"
            << "VolumeId:  " << HexEncode(config->volume_id) << "\n"
            << "KeyId:     " << config->key_id << "\n"
            << "BlockSize: " << config->block_size << "\n"
            << "Features:  " << features << "\n"
            << "CreatedAt: " << config->created_at
            << "\n"
            // Honest about what this is: checking the MAC needs the name key, i.e. keyd.
            << "Verified:  no (read without keys; `kmsfs mount` verifies the config's MAC)\n";
  return 0;
}

struct MountRequest {
  std::string cipherdir;
  std::string mountpoint;
  std::vector<std::string> o_values;
  std::string socket_flag;
  std::string log_level = "info";
  bool foreground = false;
  bool debug = false;
};

// Daemonizing reports the outcome of the mount to the invoking process: the parent waits on a
// pipe for "OK" or an error line and exits 0 or 1 accordingly, so `kmsfs mount` (and mount(8),
// and fstab) see a failed mount as a failure, not as a daemon that dies later. We fork BEFORE
// opening the volume: mlock is not inherited across fork, so no key may exist yet.
class Daemonizer {
 public:
  // Returns in the child (or when not daemonizing); the parent never returns.
  void Fork() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      std::perror("kmsfs: pipe");
      std::_Exit(1);
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("kmsfs: fork");
      std::_Exit(1);
    }
    if (pid > 0) {
      ::close(fds[1]);
      std::string msg;
      char buf[512];
      ssize_t n;
      while ((n = ::read(fds[0], buf, sizeof(buf))) != 0) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        msg.append(buf, static_cast<size_t>(n));
      }
      if (msg == "OK\n") std::_Exit(0);
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (msg.empty()) std::cerr << "kmsfs: the mount process exited before mounting\n";
      std::_Exit(WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1);
    }
    ::close(fds[0]);
    report_fd_.Reset(fds[1]);
    ::setsid();
  }
  // In the child once mounted: tell the parent, let go of the terminal.
  void Detach() {
    if (!report_fd_) return;
    (void)!::chdir("/");
    const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd >= 0) {
      ::dup2(null_fd, 0);
      ::dup2(null_fd, 1);
      ::dup2(null_fd, 2);
      if (null_fd > 2) ::close(null_fd);
    }
    (void)!::write(report_fd_.get(), "OK\n", 3);
    report_fd_.Reset();
  }
  bool IsActive() const { return report_fd_.valid(); }

 private:
  UniqueFd report_fd_;
};

int RunMount(const MountRequest& req) {
  auto split = fs::SplitMountOptions(req.o_values);
  if (!split.ok()) {
    std::cerr << "kmsfs: " << split.error().message() << "\n";
    return kExitUsage;
  }
  KeydConfig keyd;
  keyd.socket_flag = !req.socket_flag.empty() ? req.socket_flag : split->socket.value_or("");
  keyd.timeout = split->key_timeout;
  keyd.keyd_uid = split->keyd_uid;
  auto cipherdir = RealPath(req.cipherdir, "cipher directory");
  if (!cipherdir.ok()) return Fail("mount", cipherdir.error());
  auto mountpoint = RealPath(req.mountpoint, "mount point");
  if (!mountpoint.ok()) return Fail("mount", mountpoint.error());

  spdlog::level::level_enum level = spdlog::level::info;
  if (!log::ParseLevel(req.log_level, &level)) {
    std::cerr << "kmsfs: unknown log level " << req.log_level << "\n";
    return kExitUsage;
  }
  if (req.debug || split->debug) level = spdlog::level::debug;

  Daemonizer daemon;
  if (!req.foreground) daemon.Fork();
  log::Options log_options;
  // A daemon has no terminal: its log goes to the journal.
  log_options.sink = daemon.IsActive() ? log::Sink::kJournal : log::DetectSink();
  log_options.level = level;
  log_options.program = "kmsfs";
  log::Init(log_options);
  auto logger = log::Get("kmsfs");

  auto client = MakeClient(keyd);
  if (!client.ok()) return Fail("mount", client.error());
  fs::KeydDataKeySource keys(client->get());
  // The volume is opened through keyd as the invoking user: no name key, no mount.
  auto volume = fs::Volume::Open(*cipherdir, &keys, Self());
  if (!volume.ok()) return Fail("open volume " + *cipherdir, volume.error());

  fs::FuseMountOptions options;
  options.cipherdir = *cipherdir;
  options.mountpoint = *mountpoint;
  options.fuse_options = split->fuse;
  options.debug = req.debug || split->debug;
  if (split->key_revalidate) options.key_revalidate = *split->key_revalidate;
  auto mount = fs::FuseMount::Mount(volume->get(), &keys, options);
  if (!mount.ok()) return Fail("mount " + *mountpoint, mount.error());

  logger->info("mounted volume {} on {}", HexEncode((*volume)->id()), *mountpoint);
  daemon.Detach();
  // Readiness through the production path (tests wait for it): only once the mount is live.
  sd_notifyf(0, "READY=1\nSTATUS=serving volume %s\nMAINPID=%lu",
             HexEncode((*volume)->id()).c_str(), static_cast<unsigned long>(::getpid()));
  Status served = (*mount)->Serve();
  sd_notify(0, "STOPPING=1");
  mount->reset();  // unmount (if still mounted) before the volume and the keys go
  if (!served.ok()) {
    logger->error("session ended with an error: {}", served.error().ToString());
    return 1;
  }
  logger->info("unmounted {}", *mountpoint);
  return 0;
}

// mount(8) helper syntax: SOURCE TARGET [-sfnv] [-N ns] [-o opts] [-t type]. Also what
// mount.fuse3 runs for type fuse.kmsfs ("kmsfs SOURCE TARGET -o opts").
int RunHelper(int argc, char** argv) {
  MountRequest req;
  std::vector<std::string> positional;
  bool fake = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-o" && i + 1 < argc) {
      req.o_values.push_back(argv[++i]);
    } else if (a.starts_with("-o") && a.size() > 2) {
      req.o_values.push_back(a.substr(2));
    } else if ((a == "-t" || a == "-N") && i + 1 < argc) {
      ++i;  // the type is ours by definition; namespaces are not supported and ignored
    } else if (a == "-f") {
      fake = true;  // mount(8)'s "fake": do everything but the mount
    } else if (a == "-n" || a == "-s" || a == "-v") {
      // no mtab (there is none), sloppy, verbose: nothing to do
    } else if (a == "-h" || a == "--help") {
      std::cout << "usage: mount.kmsfs CIPHERDIR MOUNTPOINT [-o socket=PATH,key_timeout=S,"
                   "allow_other,...]\n"
                   "fstab: CIPHERDIR MOUNTPOINT fuse.kmsfs defaults,allow_other,"
                   "socket=/run/kmsfs/keyd.sock 0 0\n";
      return 0;
    } else if (a.starts_with("-")) {
      std::cerr << "mount.kmsfs: unknown option " << a << "\n";
      return kExitUsage;
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) {
    std::cerr << "usage: mount.kmsfs CIPHERDIR MOUNTPOINT [-o OPTIONS]\n";
    return kExitUsage;
  }
  if (fake) return 0;
  req.cipherdir = positional[0];
  req.mountpoint = positional[1];
  return RunMount(req);
}

// ---- key lifecycle: `info --versions`, `rewrap`, `reencrypt` (docs/lifecycle.md) ----------

int RunVersions(const std::string& cipherdir, bool json) {
  auto report = fs::lifecycle::ScanVersions(cipherdir);
  if (!report.ok()) return Fail("info --versions " + cipherdir, report.error());
  std::cout << fs::lifecycle::FormatVersionReport(*report, json);
  return report->unreadable.empty() ? 0 : ipc::ExitCodeForCode(Code::kCorrupt);
}

std::string VersionsLine(const fs::lifecycle::VersionReport& r) {
  std::string out;
  for (const auto& [k, count] : r.files) {
    if (!out.empty()) out += ", ";
    out += "v" + std::to_string(k.second) + ": " + std::to_string(count);
    if (k.first != r.name_key.key_id) out += " (key " + k.first + ")";
  }
  return out.empty() ? "no files" : out;
}

struct RewrapRequest {
  std::string cipherdir;
  unsigned jobs = 8;
  double rate = 0;
  bool dry_run = false;
};

int RunRewrap(const RewrapRequest& req, const KeydConfig& keyd) {
  auto cipherdir = RealPath(req.cipherdir, "cipher directory");
  if (!cipherdir.ok()) return Fail("rewrap", cipherdir.error());
  auto before = fs::lifecycle::ScanVersions(*cipherdir);
  if (!before.ok()) return Fail("rewrap " + *cipherdir, before.error());
  auto client = MakeClient(keyd);
  if (!client.ok()) return Fail("rewrap", client.error());
  ipc::KeydClientOptions options;
  options.expected_server_uid = keyd.keyd_uid.value_or(0);
  const std::string socket = (*client)->socket_path();
  auto make_service = [&]() -> std::unique_ptr<fs::lifecycle::WrapService> {
    return std::make_unique<fs::lifecycle::KeydWrapService>(socket, options);
  };

  // The name key first: with it the volume is verified (config MAC) and failures can be named
  // by their plaintext paths. Without it (no Decrypt on the name key) files are still rewrapped.
  fs::KeydDataKeySource keys(client->get());
  auto volume = fs::Volume::Open(*cipherdir, &keys, Self());
  std::string config_outcome;
  int rc = 0;
  if (volume.ok()) {
    auto service = make_service();
    auto config = fs::lifecycle::RewrapVolumeConfig(**volume, service.get(), req.dry_run);
    if (!config.ok()) {
      config_outcome = "failed: " + config.error().message();
      rc = ipc::ExitCodeForCode(config.error().code());
    } else {
      config_outcome =
          *config ? (req.dry_run ? "would be rewrapped" : "rewrapped") : "already current";
    }
  } else {
    config_outcome = "not rewrapped (cannot open the volume: " + volume.error().message() + ")";
    rc = ipc::ExitCodeForCode(volume.error().code());
  }
  auto entries =
      fs::lifecycle::ListBackingFiles(*cipherdir, volume.ok() ? &(*volume)->names() : nullptr);
  if (!entries.ok()) return Fail("rewrap " + *cipherdir, entries.error());

  fs::lifecycle::Progress progress("rewrap", "files", stderr);
  fs::lifecycle::RewrapOptions ro;
  ro.jobs = req.jobs;
  ro.rate = req.rate;
  ro.dry_run = req.dry_run;
  ro.on_progress = [&progress](uint64_t done, uint64_t total, uint64_t failed) {
    progress.Update(done, total, failed);
  };
  const auto start = std::chrono::steady_clock::now();
  fs::lifecycle::RewrapResult result =
      fs::lifecycle::RewrapFiles(entries->files, before->config.volume_id, make_service, ro);
  // What the walk could not look into may hold files under an old version: those are failures
  // (named, exit 1), never a silent "all rewrapped".
  for (const auto& [path, why] : entries->unreadable) result.failures.emplace_back(path, why);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.Finish(result.files, result.files, result.failures.size());

  auto after = fs::lifecycle::ScanVersions(*cipherdir);
  std::cout << "rewrap " << *cipherdir << (req.dry_run ? " (dry run)" : "") << "\n"
            << "  files:       " << result.files << " (" << result.rewrapped
            << (req.dry_run ? " to rewrap, " : " rewrapped, ") << result.current
            << " already current, " << result.failures.size() << " failed) in "
            << static_cast<uint64_t>(seconds * 1000) << " ms\n"
            << "  versions:    " << VersionsLine(*before) << "  ->  "
            << (after.ok() ? VersionsLine(*after) : "? (" + after.error().message() + ")") << "\n"
            << "  name key:    v" << before->name_key.version << ", " << config_outcome << "\n";
  for (const auto& [path, why] : result.failures) {
    std::cout << "  FAILED " << path << ": " << why << "\n";
  }
  if (!result.failures.empty()) return 1;
  return rc;
}

int RunReencrypt(const std::vector<std::string>& paths) {
  // ReencryptFile holds a read lease on each file it copies; a writer opening it breaks the
  // lease, which the kernel signals with SIGIO (default action: terminate). The break is checked
  // with F_GETLEASE instead.
  ::signal(SIGIO, SIG_IGN);
  // Every path is checked before any file is touched: a typo fails the whole command early.
  std::vector<std::string> dirs;
  for (const auto& p : paths) {
    auto mount = fs::lifecycle::KmsfsMountOf(p);
    if (!mount.ok()) return Fail("reencrypt", mount.error());
    const size_t slash = p.find_last_of('/');
    dirs.push_back(slash == std::string::npos ? "." : p.substr(0, slash == 0 ? 1 : slash));
  }
  std::sort(dirs.begin(), dirs.end());
  dirs.erase(std::unique(dirs.begin(), dirs.end()), dirs.end());
  for (const auto& d : dirs) {
    auto removed = fs::lifecycle::RemoveStaleTemps(d);
    if (removed.ok() && *removed > 0) {
      std::cerr << "kmsfs: reencrypt: removed " << *removed
                << " unfinished copies of an interrupted run in " << d << "\n";
    }
  }
  fs::lifecycle::Progress progress("reencrypt", "files", stderr);
  uint64_t done = 0, failed = 0;
  for (const auto& p : paths) {
    Status s = fs::lifecycle::ReencryptFile(
        p, [&](uint64_t) { progress.Update(done, paths.size(), failed); });
    ++done;
    if (!s.ok()) {
      ++failed;
      std::cerr << "kmsfs: reencrypt: " << s.error().message() << "\n";
    }
    progress.Update(done, paths.size(), failed);
  }
  progress.Finish(done, paths.size(), failed);
  std::cout << "reencrypt: " << (done - failed) << " files re-encrypted under fresh keys, "
            << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}

struct RetireRequest {
  std::string key_id;
  uint32_t version = 0;
  std::optional<int64_t> pending_window_days;
  bool force = false;
  std::vector<std::string> cipherdirs;
};

// keyd cannot see cipher directories, so the check that no file still needs the version is
// ours: every named volume is scanned (headers and kmsfs.conf) before RetireKeyVersion is sent.
int RunRetireVersion(const RetireRequest& req, const KeydConfig& keyd) {
  auto client = MakeClient(keyd);
  if (!client.ok()) return Fail("retire-version", client.error());
  // Blobs name key ids, never aliases: resolve first.
  auto described = (*client)->Call(ipc::Op::kDescribeKey, {{"KeyId", req.key_id}});
  if (!described.ok()) return Fail("retire-version: describe " + req.key_id, described.error());
  const std::string key_id = (*described)["KeyMetadata"].value("KeyId", std::string());
  if (key_id.empty()) {
    return Fail("retire-version", Error(Code::kInternal, "DescribeKey returned no KeyId"));
  }
  uint64_t in_use = 0, unreadable = 0;
  for (const auto& dir : req.cipherdirs) {
    auto report = fs::lifecycle::ScanVersions(dir);
    if (!report.ok()) return Fail("retire-version: scan " + dir, report.error());
    const bool name_key =
        report->name_key.key_id == key_id && report->name_key.version == req.version;
    const uint64_t files = report->CountAt(key_id, req.version) - (name_key ? 1 : 0);
    in_use += files + (name_key ? 1 : 0);
    unreadable += report->unreadable.size();
    std::cout << dir << ": " << files << " of " << report->total << " files under version "
              << req.version << ", name key " << (name_key ? "too" : "not");
    if (!report->unreadable.empty()) {
      std::cout << ", " << report->unreadable.size() << " unreadable";
    }
    std::cout << "\n";
    for (const auto& [path, why] : report->unreadable) {
      std::cout << "  unreadable " << path << ": " << why << "\n";
    }
  }
  if ((in_use > 0 || unreadable > 0) && !req.force) {
    std::cerr << "kmsfs: retire-version: refused: " << in_use
              << " keys (files and name keys) still need version " << req.version << " of key "
              << key_id << (unreadable > 0 ? " (and " + std::to_string(unreadable) +
                                        " headers, directories or mount points could not be "
                                        "read: they may use it too)"
                                  : "")
              << "; run `kmsfs rewrap CIPHERDIR` first, or pass --force to make them "
                 "unreadable\n";
    return ipc::ExitCodeForCode(Code::kFailedPrecondition);
  }
  nlohmann::json params = {{"KeyId", key_id}, {"KeyVersion", req.version}};
  if (req.pending_window_days) params["PendingWindowInDays"] = *req.pending_window_days;
  auto retired = (*client)->Call(ipc::Op::kRetireKeyVersion, std::move(params));
  if (!retired.ok()) return Fail("retire-version", retired.error());
  std::cout << "key " << key_id << " version " << req.version << ": "
            << retired->value("KeyVersionState", std::string("?"))
            << "; its material is destroyed after "
            << retired->value("PendingWindowInDays", int64_t{0})
            << " days (kmsctl cancel-key-version-retirement until then)\n";
  return 0;
}

// ---- fsck (docs/fsck.md): e2fsck's exit codes, not the table above ----------------------------

int RunFsck(const std::string& cipherdir, bool repair, const KeydConfig& keyd) {
  auto client = MakeClient(keyd);
  if (!client.ok()) {
    std::cerr << "kmsfs: fsck: " << client.error().message() << "\n";
    return fs::fsck::kExitOperational;
  }
  fs::KeydDataKeySource keys(client->get());
  fs::fsck::Options options;
  options.repair = repair;
  options.who = Self();  // keyd decides on, and audits, fsck's own credentials
  auto report = fs::fsck::RunFsck(cipherdir, &keys, options);
  if (!report.ok()) {
    std::cerr << "kmsfs: fsck " << cipherdir << ": " << report.error().message() << "\n";
    return fs::fsck::kExitOperational;
  }
  std::cout << report->Format();
  return report->ExitCode();
}

int RunCli(int argc, char** argv) {
  CLI::App app{"kmsfs: a transparent encrypting file system whose keys live in kmsfs-keyd"};
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 2 usage, 3 not found, 4 access denied, 5 key unavailable, 6 corrupt, "
      "7 key service unavailable, 1 other errors (docs/errors.md).");

  std::string socket_flag;
  auto add_socket = [&socket_flag](CLI::App* sub) {
    sub->add_option("--socket", socket_flag,
                    "kmsfs-keyd's socket (default $KMSFS_SOCKET or /run/kmsfs/keyd.sock)");
  };

  std::string key_id, init_dir;
  auto* init = app.add_subcommand("init", "Create a volume in an empty CIPHERDIR");
  init->add_option("--key-id", key_id, "master key id or alias/NAME for the volume")->required();
  add_socket(init);
  init->add_option("CIPHERDIR", init_dir)->required();

  std::string info_dir;
  bool info_versions = false, info_json = false;
  auto* info =
      app.add_subcommand("info", "Show a volume's config (read without keys, so unauthenticated)");
  info->add_option("CIPHERDIR", info_dir)->required();
  info->add_flag("--versions", info_versions,
                 "count the files wrapped under each master key version (no keys needed)");
  info->add_flag("--json", info_json, "with --versions: print a JSON object");

  RewrapRequest rewrap_req;
  auto* rewrap = app.add_subcommand(
      "rewrap", "Re-wrap every file key and the name key under its key's current version");
  rewrap->add_option("--jobs,-j", rewrap_req.jobs, "parallel keyd connections (default 8)")
      ->check(CLI::Range(1, 64));
  rewrap->add_option("--rate", rewrap_req.rate, "at most this many files per second (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  rewrap->add_flag("--dry-run", rewrap_req.dry_run, "ask keyd, count, write nothing");
  add_socket(rewrap);
  rewrap->add_option("CIPHERDIR", rewrap_req.cipherdir)->required();

  std::vector<std::string> reencrypt_paths;
  auto* reencrypt = app.add_subcommand(
      "reencrypt", "Give files in a mounted volume fresh data keys (copy and atomic rename)");
  reencrypt->add_option("PATH", reencrypt_paths, "files inside a kmsfs mount")->required();

  RetireRequest retire_req;
  auto* retire = app.add_subcommand(
      "retire-version",
      "Retire an old key version (keyd RetireKeyVersion) once no file of the volumes uses it");
  retire->add_option("--key-id", retire_req.key_id, "key id or alias/NAME")->required();
  retire->add_option("--key-version", retire_req.version, "the version to retire")
      ->required()
      ->check(CLI::PositiveNumber);
  retire->add_option("--pending-window-in-days", retire_req.pending_window_days,
                     "days before keyd destroys the version's material (keyd's default: 30)");
  retire->add_flag("--force", retire_req.force,
                   "retire even if files still use it (they become unreadable: ENOKEY)");
  add_socket(retire);
  retire->add_option("CIPHERDIR", retire_req.cipherdirs, "every volume that uses the key")
      ->required();

  std::string fsck_dir;
  bool fsck_repair = false;
  auto* fsck = app.add_subcommand(
      "fsck", "Check a volume offline (config, names, headers, every block); --repair fixes it");
  fsck->add_flag("--repair", fsck_repair,
                 "zero damaged blocks, fix sizes, move undecryptable names to /lost+found");
  add_socket(fsck);
  fsck->add_option("CIPHERDIR", fsck_dir)->required();
  fsck->footer(
      "Exit codes (as e2fsck, OR'ed): 0 no problems, 1 problems repaired, 4 problems left "
      "(or found without --repair), 8 operational error (volume mounted, keyd unreachable, "
      "something not checked), 16 usage. See docs/fsck.md.");

  MountRequest req;
  auto* mount = app.add_subcommand("mount", "Mount CIPHERDIR on MOUNTPOINT");
  mount->add_flag("-f,--foreground", req.foreground, "stay in the foreground (systemd, tests)");
  mount->add_flag("-d,--debug", req.debug, "trace FUSE requests (implies --log-level debug)");
  mount->add_option("-o", req.o_values,
                    "mount options: allow_other, ro, socket=PATH, key_timeout=SECONDS, "
                    "key_revalidate=SECONDS, keyd_uid=UID, ... (repeatable)");
  mount->add_option("--log-level", req.log_level, "trace|debug|info|warn|error|off");
  add_socket(mount);
  mount->add_option("CIPHERDIR", req.cipherdir)->required();
  mount->add_option("MOUNTPOINT", req.mountpoint)->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    if (rc != 0 && argc > 1 && std::strcmp(argv[1], "fsck") == 0) return fs::fsck::kExitUsage;
    return rc == 0 ? 0 : kExitUsage;
  }
  KeydConfig keyd;
  keyd.socket_flag = socket_flag;
  if (*fsck) return RunFsck(fsck_dir, fsck_repair, keyd);
  if (*init) return RunInit(key_id, keyd, init_dir);
  if (*info && info_versions) return RunVersions(info_dir, info_json);
  if (*info) return RunInfo(info_dir);
  if (*rewrap) return RunRewrap(rewrap_req, keyd);
  if (*reencrypt) return RunReencrypt(reencrypt_paths);
  if (*retire) return RunRetireVersion(retire_req, keyd);
  req.socket_flag = socket_flag;
  return RunMount(req);
}

bool IsSubcommand(const char* a) {
  return std::strcmp(a, "init") == 0 || std::strcmp(a, "fsck") == 0 ||
         std::strcmp(a, "info") == 0 || std::strcmp(a, "mount") == 0 ||
         std::strcmp(a, "rewrap") == 0 || std::strcmp(a, "reencrypt") == 0 ||
         std::strcmp(a, "retire-version") == 0;
}

}  // namespace
}  // namespace kmsfs

int main(int argc, char** argv) {
  // Before anything else, and before any key exists: not dumpable, no core files.
  kmsfs::Status hardened = kmsfs::crypto::HardenProcess();
  if (!hardened.ok()) {
    std::cerr << "kmsfs: cannot harden the process: " << hardened.error().message() << "\n";
    return 1;
  }
  try {
    std::string name = argc > 0 ? argv[0] : "kmsfs";
    name = name.substr(name.find_last_of('/') + 1);
    // mount.kmsfs (mount -t kmsfs), and "kmsfs SOURCE TARGET -o ..." from mount.fuse3
    // (mount -t fuse.kmsfs and fstab): the mount(8) helper syntax.
    if (name.starts_with("mount.") ||
        (argc >= 3 && argv[1][0] != '-' && !kmsfs::IsSubcommand(argv[1]))) {
      return kmsfs::RunHelper(argc, argv);
    }
    return kmsfs::RunCli(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "kmsfs: " << e.what() << "\n";
    return 1;
  }
}
