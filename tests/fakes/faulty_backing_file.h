// FaultyBackingFile: a BackingFile wrapper that injects I/O failures (LevelDB's ErrorEnv idea).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <span>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "fs/core/backing_file.h"

namespace kmsfs::fakes {

// Forwards to a borrowed BackingFile (which must outlive it) until told to fail. Failures are
// kIo with the chosen errno, exactly as PosixBackingFile reports them.
//   SetCapacity: a disk that is full at `bytes`: a write reaching past both the limit and the
//     end of what was ever written stores the part below the limit (a short write, as the kernel
//     does) and then fails with ENOSPC. Rewriting written bytes always succeeds (already
//     allocated); truncation always works, and growing by truncation allocates nothing (sparse).
//   FailWritesAfter: the first `ok_calls` writes succeed, the next `fail_calls` fail with `err`
//     (then writes work again); with `short_write` a failing write first stores half its bytes.
//   FailReads / FailTruncate / FailSync / FailSize: every such call fails with `err`.
// Thread-safe.
class FaultyBackingFile final : public fs::BackingFile {
 public:
  explicit FaultyBackingFile(fs::BackingFile* target) : target_(target) {}

  Result<size_t> PRead(std::span<uint8_t> buf, uint64_t offset) override;
  Status PWrite(ByteSpan data, uint64_t offset) override;
  Result<uint64_t> Size() override;
  Status Truncate(uint64_t size) override;
  Status Sync(bool data_only) override;

  void SetCapacity(uint64_t bytes);
  void FailWritesAfter(uint64_t ok_calls, int err, bool short_write = false,
                       uint64_t fail_calls = UINT64_MAX);
  void FailReads(int err);
  void FailTruncate(int err);
  void FailSync(int err);
  void FailSize(int err);
  // Back to forwarding everything.
  void Heal();
  uint64_t failures() const;

 private:
  fs::BackingFile* const target_;
  mutable std::mutex mu_;
  std::optional<uint64_t> capacity_;       // guarded by mu_
  uint64_t written_end_ = 0;                // guarded by mu_; allocation high-water mark
  std::optional<uint64_t> ok_writes_left_;  // guarded by mu_
  uint64_t failing_writes_left_ = 0;        // guarded by mu_
  int write_err_ = 0;                       // guarded by mu_
  bool short_write_ = false;                // guarded by mu_
  int read_err_ = 0;                        // guarded by mu_
  int truncate_err_ = 0;                    // guarded by mu_
  int sync_err_ = 0;                        // guarded by mu_
  int size_err_ = 0;                        // guarded by mu_
  uint64_t failures_ = 0;                   // guarded by mu_
};

}  // namespace kmsfs::fakes
