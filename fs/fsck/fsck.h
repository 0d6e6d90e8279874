// Fsck: the offline check and repair of a whole cipher directory (`kmsfs fsck`, docs/fsck.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/status.h"
#include "fs/core/data_key_source.h"

namespace kmsfs::fs::fsck {

// e2fsck's exit codes (fsck(8)), OR'ed together: what `kmsfs fsck` returns.
inline constexpr int kExitClean = 0;
inline constexpr int kExitCorrected = 1;
inline constexpr int kExitUncorrected = 4;
inline constexpr int kExitOperational = 8;
inline constexpr int kExitUsage = 16;

struct Options {
  bool repair = false;
  // Who asks keyd for the name key and every file's DEK: fsck itself (pid 0), so keyd decides
  // and audits on fsck's own peer credentials.
  Requester who;
};

// One problem. `path` is the plaintext path inside the volume ("/dir/file") when every name on
// the way decrypts, else "backing:" + the path relative to the cipher directory. Block numbers
// when the problem is in blocks. Never plaintext contents.
struct Finding {
  enum class State {
    kFound,        // check only: not repaired because repair was not asked
    kRepaired,     // --repair fixed it; `action` says how
    kUnrepairable  // left as it is (even with --repair); `action` says why
  };
  std::string path;
  std::optional<uint64_t> first_block;
  std::optional<uint64_t> last_block;
  std::string problem;
  std::string action;
  State state = State::kFound;
};

struct Report {
  std::string volume_id;  // hex, once the config parsed
  std::vector<Finding> findings;
  // Things fsck could not check, and why (keyd denied a file's key, an I/O error, ...).
  std::vector<std::string> not_checked;
  uint64_t directories = 0;
  uint64_t files = 0;
  uint64_t symlinks = 0;
  uint64_t special_files = 0;
  uint64_t blocks = 0;
  uint64_t xattrs = 0;
  bool repair = false;

  // 0 clean, |1 something was repaired, |4 something is left (or found without --repair),
  // |8 something could not be checked.
  int ExitCode() const;
  // The human-readable report: one line per finding, then a summary line.
  std::string Format() const;
};

// Checks everything in `cipherdir` (docs/fsck.md lists what): the config (parse, name key
// unwrap, MAC), every directory's kmsfs.dirid, every name (long names with their side files),
// every symlink target, every user./trusted. xattr value, every file header (parse, DEK unwrap
// through `keys`) and every block (CheckContent), and stray files. With options.repair it
// repairs what docs/fsck.md says it repairs and nothing healthy.
//
// Errors (nothing checked, or the check stopped): kFailedPrecondition if the volume is mounted
// (/proc/self/mountinfo) or written by a newer kmsfs; kNotFound if there is no volume; key
// source errors for the name key (kPermissionDenied, kKeyUnavailable, kUnavailable), and
// kUnavailable if keyd goes away during the check. Damage is never an error: it is in Report.
// `keys` is borrowed; single-threaded.
Result<Report> RunFsck(const std::string& cipherdir, DataKeySource* keys, const Options& options);

// The mount point where `cipherdir` (canonical path) is mounted as a kmsfs volume, according to
// `mountinfo` (the text of /proc/self/mountinfo: kmsfs mounts have fstype fuse.kmsfs and the
// cipher directory as their source), or nullopt.
std::optional<std::string> FindKmsfsMount(std::string_view mountinfo, const std::string& cipherdir);

}  // namespace kmsfs::fs::fsck
