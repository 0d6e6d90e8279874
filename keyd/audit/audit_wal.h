// AuditWal: the audit trail's write-ahead file (<state dir>/audit.wal) — preallocated, overwritten
// in place, one fdatasync per group commit. Frame format and replay rules: docs/audit.md.
//
// Why a separate file and not LMDB: an LMDB commit syncs twice (data pages, then the meta page)
// and rewrites B-tree pages; an overwrite of an already written, preallocated region followed by
// fdatasync changes no metadata and costs one flush. AuditTrail writes each group commit's
// composed records here and drains them into LMDB (the trail of record) in large batches.
//
// A frame:  "KAW1" | u32 text length | u64 sequence | record text | check
//   integers little-endian; check = the first 16 bytes of SHA-256(everything before it).
// The check finds torn and stale bytes; it is not a MAC (the record's own chain hash, recomputed
// on replay, is what ties it to the trail).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/base/status.h"
#include "common/base/unique_fd.h"

namespace kmsfs::keyd {

inline constexpr char kWalFileName[] = "audit.wal";
inline constexpr size_t kWalFrameOverhead = 4 + 4 + 8 + 16;
inline constexpr size_t kWalMaxText = size_t{1} << 20;  // a record is a few KiB at most

struct WalFrame {
  uint64_t sequence = 0;
  std::string text;
};

// Appends the frame of (sequence, text) to `out`. `text` must be at most kWalMaxText bytes.
void AppendWalFrame(uint64_t sequence, std::string_view text, std::string* out);

// The frames at the start of `bytes`, in order, as long as each is whole, its check matches and
// its sequence number is the previous one's + 1. Stops (without error) at the first that is not:
// zeros, a torn write, or an older frame left behind by an earlier pass over the file.
std::vector<WalFrame> ParseWalFrames(std::string_view bytes);

// The open file. Not thread-safe: AuditTrail calls it only while holding LMDB's writer lock.
class WalFile {
 public:
  // Opens `dir`/audit.wal, O_NOFOLLOW|O_CLOEXEC; if it is missing, creates it empty (0600) when
  // `create`, else kNotFound. Opens O_NONBLOCK until checked, so a FIFO or device node there
  // cannot block. Refuses (kPermissionDenied, naming the file and the fix) anything but a regular
  // file with one link (no other name), owned by us or root, with no group/other access. kIo only
  // when a missing
  // file could not be created (a full or read-only disk); an existing file that cannot be opened
  // is kFailedPrecondition (it may hold records). Sets *created when it made the file.
  static Result<WalFile> Open(const std::string& dir, bool create, bool* created);
  WalFile() = default;
  WalFile(WalFile&&) noexcept = default;
  WalFile& operator=(WalFile&&) noexcept = default;

  // The whole file (replay reads it once at startup).
  Result<std::string> ReadAll() const;
  // Makes the file exactly `bytes` long by WRITING zeros after its end (or truncating), then
  // fsyncs it and, if `sync_dir`, its directory. Writing (not fallocate) matters: an unwritten
  // extent turns every later overwrite's fdatasync into a metadata commit.
  Status Preallocate(uint64_t bytes, bool sync_dir);
  // pwrite of all of `data` at `offset`, then fdatasync. kIo with the errno.
  Status Write(uint64_t offset, std::string_view data);
  // Test only (fault injection): called before each pwrite (`sync` false) and each fdatasync
  // (`sync` true) of Write; a nonzero errno fails that step as if the call had returned it.
  void set_fault_for_test(std::function<int(bool sync)> fault) { fault_ = std::move(fault); }

  bool valid() const { return fd_.valid(); }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  UniqueFd fd_;
  std::string path_, dir_;
  uint64_t size_ = 0;
  std::function<int(bool sync)> fault_;
};

}  // namespace kmsfs::keyd
