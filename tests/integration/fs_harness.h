// fs_harness: real kmsfs mounts for integration tests — `kmsfs init`, `kmsfs mount -f` with
// NOTIFY_SOCKET readiness, and an unmount that always happens — plus byte-search helpers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/base/unique_fd.h"
#include "tests/integration/harness.h"

namespace kmsfs::it {

// The kmsfs binary under test ($KMSFS_TEST_KMSFS_BIN overrides the one built with the tests).
std::string KmsfsBinary();

// Skip() (exit 77) unless this host can mount FUSE file systems: /dev/fuse and fusermount3.
void RequireFuse();

// True if `mountpoint` (an absolute, canonical path) is in /proc/self/mountinfo.
bool IsMounted(const std::string& mountpoint);

// A new key in the sandbox's keyd (kmsctl create-key); REQUIREs success. Returns the KeyId.
std::string CreateKey(Sandbox& box);
// `kmsfs init --key-id KEY --socket <box> CIPHERDIR` (CIPHERDIR is created if missing).
// REQUIREs success; returns the printed volume id.
std::string InitVolume(Sandbox& box, const std::string& key_id, const std::string& cipherdir);

// One `kmsfs mount -f` process serving `cipherdir` on `mountpoint`. The constructor waits for
// READY=1 on a datagram socket owned by the test (the production readiness path) and for the
// mount to appear in mountinfo; REQUIREs both. The destructor always unmounts (fusermount3 -u,
// then waits for the process; SIGKILL and a lazy unmount as a last resort) so a failed test
// leaves no mount behind.
class Mount {
 public:
  struct Options {
    std::vector<std::string> o;         // -o values
    std::vector<std::string> args;      // extra arguments before CIPHERDIR
    std::vector<std::string> env;       // extra environment
    std::vector<std::string> launcher;  // prefix, e.g. AsUser(1000, 1000, {})
    bool wait_ready = true;
    std::chrono::milliseconds ready_timeout{20'000};
  };
  Mount(Sandbox& box, const std::string& cipherdir, const std::string& mountpoint, Options options);
  Mount(Sandbox& box, const std::string& cipherdir, const std::string& mountpoint)
      : Mount(box, cipherdir, mountpoint, Options{}) {}
  ~Mount();
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  const std::string& mountpoint() const { return mountpoint_; }
  std::string Path(const std::string& rel) const { return mountpoint_ + "/" + rel; }
  bool WaitReady(std::chrono::milliseconds timeout);
  // fusermount3 -u and wait for kmsfs to exit. True if it exited 0 and nothing is left in
  // mountinfo. Idempotent.
  bool Unmount(std::chrono::milliseconds timeout = std::chrono::milliseconds(20'000));
  bool running() { return child_ && child_->running(); }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  std::optional<int> exit_code() const { return exit_code_; }
  // Everything kmsfs wrote to stdout/stderr.
  std::string Log() const;

 private:
  std::string mountpoint_;
  std::string log_path_;
  UniqueFd notify_fd_;
  std::unique_ptr<Child> child_;
  std::optional<int> exit_code_;
  bool unmounted_ = false;
};

// The usual setup: a sandbox with keyd, one key, a volume initialized at <root>/cipher and
// mounted at <root>/mnt. Skips (77) without FUSE. Members are destroyed in reverse order, so
// the mount goes before keyd and the sandbox.
struct MountedVolume {
  explicit MountedVolume(Mount::Options options = {});
  // Unmounts (CHECKing that it was clean) and mounts again with `options`.
  void Remount(Mount::Options options = {});
  std::string P(const std::string& rel) const { return mount->Path(rel); }

  Sandbox box;
  std::unique_ptr<Keyd> keyd;
  std::string key_id;
  std::string volume_id;
  std::string cipherdir;
  std::string mountpoint;
  std::unique_ptr<Mount> mount;
};

// Every regular file, symlink target and entry name under `dir`, read raw: which of `needles`
// occur anywhere in them (as bytes). The backing tree must contain none of a test's plaintexts.
std::vector<std::string> TreeContains(const std::string& dir,
                                      const std::vector<std::string>& needles);

// Small file helpers that REQUIRE success.
void WriteFile(const std::string& path, const std::string& data);
std::string ReadFile(const std::string& path);
// errno of a failed call, 0 on success: CHECK(Errno(::mkdir(p, 0755)) == EEXIST).
int ErrnoOf(int rc);

// Raw access to a backing directory, for tamper and fsck tests (all REQUIRE success).
// The entries of `dir` (full paths), kmsfs.* files left out.
std::set<std::string> BackingEntries(const std::string& dir);
// Runs `make` (which creates one entry through the mount) and returns the backing path of the new
// entry in `backing_dir` (names are encrypted: it is the one entry that was not there before).
std::string Locate(const std::string& backing_dir, const std::function<void()>& make);
std::string ReadRaw(const std::string& path, uint64_t off, size_t len);
void WriteRaw(const std::string& path, uint64_t off, const std::string& bytes);  // and fsync
void FlipByte(const std::string& path, uint64_t off, uint8_t mask = 0x01);
// Exchanges the `len` bytes at `a` and at `b`.
void Swap(const std::string& path, uint64_t a, uint64_t b, size_t len);

}  // namespace kmsfs::it
