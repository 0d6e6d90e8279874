// MountOptions: splitting `-o a,b,c` into kmsfs's own options, FUSE's, and fstab-only ones.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/status.h"

namespace kmsfs::fs {

struct SplitOptions {
  std::vector<std::string> fuse;                         // for libfuse and the kernel, in order
  std::optional<std::string> socket;                     // socket=PATH: keyd's socket
  std::optional<std::chrono::milliseconds> key_timeout;  // key_timeout=SECONDS (may be 0.5)
  std::optional<uid_t> keyd_uid;  // keyd_uid=N: the uid keyd must run as (default 0)
  // key_revalidate=SECONDS (may be 0.5): revocation bound for open handles.
  std::optional<std::chrono::milliseconds> key_revalidate;
  bool debug = false;  // debug: libfuse request tracing
};

// Parses the values of every -o given (each "a,b,c"; '\,' is a literal comma). Ours are taken
// out: socket=, key_timeout=, key_revalidate=, keyd_uid=, debug. fstab-only options that mean
// nothing to FUSE are dropped: defaults, auto, noauto, user, users, nouser, owner, group, nofail,
// _netdev, rw, comment=*, x-* (x-systemd.*, x-gvfs-*, ...). default_permissions is dropped too
// (always on). Everything else goes to FUSE (allow_other, ro, nosuid, nodev, dev, suid, noexec,
// ...), which rejects what it does not know. kInvalidArgument for a malformed value of ours.
Result<SplitOptions> SplitMountOptions(const std::vector<std::string>& o_values);

}  // namespace kmsfs::fs
