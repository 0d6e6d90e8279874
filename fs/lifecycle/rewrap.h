// Rewrap: moves every file's wrapped DEK (and the volume's name key) to its key's current version
// through keyd's ReEncrypt, rewriting each header in place with one sector-atomic write.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/format/encryption_context.h"
#include "fs/lifecycle/volume_scan.h"

namespace kmsfs::fs {
class Volume;
}

namespace kmsfs::fs::lifecycle {

// What rewrap needs from keyd: ReEncrypt under the same key's current version. The plaintext
// DEK stays inside keyd. One WrapService per worker thread (each may hold its own connection).
class WrapService {
 public:
  struct Rewrapped {
    Bytes blob;            // serialized WrappedBlob under the destination's current version
    uint32_t version = 0;  // that version (keyd's KeyVersion)
  };
  virtual ~WrapService() = default;
  // Errors as keyd reports them (kPermissionDenied, kKeyUnavailable, kCorrupt, kUnavailable...).
  virtual Result<Rewrapped> ReEncrypt(ByteSpan blob, const format::EncryptionContext& context,
                                      const std::string& key_id) = 0;
};
using WrapServiceFactory = std::function<std::unique_ptr<WrapService>()>;

// The new header page for `old_page` with its wrapped DEK replaced by `new_blob`, through
// format::ParseFileHeader/SerializeFileHeader (so every other header field is kept as parsed).
// Also checks the property the in-place write relies on: the pages are the same size and differ
// only inside the first kAtomicPrefix bytes (kFailedPrecondition otherwise; a blob of another
// length, e.g. under a key with a longer id, is refused rather than written non-atomically).
inline constexpr size_t kAtomicPrefix = 512;
Result<Bytes> RewrapHeaderPage(ByteSpan old_page, ByteSpan new_blob);

struct RewrapOptions {
  unsigned jobs = 8;     // worker threads, each with its own keyd connection
  double rate = 0;       // files per second that need a ReEncrypt; 0 = unlimited
  bool dry_run = false;  // count what would be rewrapped, write nothing
  // Called from worker threads (serialized by the caller's progress object) after each file.
  std::function<void(uint64_t done, uint64_t total, uint64_t failed)> on_progress;
};

struct RewrapResult {
  uint64_t files = 0;      // files considered
  uint64_t rewrapped = 0;  // headers rewritten
  uint64_t current = 0;    // already at the current version (skipped: resume/idempotence)
  std::vector<std::pair<std::string, std::string>> failures;  // (display path, error)
  bool config_rewrapped = false;
  std::string config_error;  // why kmsfs.conf was not rewrapped (empty if it was or was current)
};

// Rewraps every header in `entries` (see ListBackingFiles). `volume_id` is the volume's id (from
// kmsfs.conf; a wrong id only makes every ReEncrypt fail). Per file: read the header page,
// skip it if its version is the key's current one (learned from keyd's answers), ReEncrypt,
// build the new page (RewrapHeaderPage), re-read the page and start over if someone else
// changed it meanwhile, then pwrite the first kAtomicPrefix bytes at offset 0 and fdatasync.
// Failures are collected per file, never fatal; SIGKILL at any point leaves every header either
// old or new, and a rerun skips the files already done.
RewrapResult RewrapFiles(const std::vector<BackingEntry>& entries,
                         std::span<const uint8_t, 16> volume_id, const WrapServiceFactory& keyd,
                         const RewrapOptions& options);

// Rewraps kmsfs.conf's NameKeyBlob and recomputes its Mac with `volume`'s name codec (opened,
// i.e. verified, by the caller), replacing the file atomically (temp, fsync, rename, fsync dir).
// Returns true if it was rewritten, false if already current.
Result<bool> RewrapVolumeConfig(const Volume& volume, WrapService* keyd, bool dry_run);

}  // namespace kmsfs::fs::lifecycle
