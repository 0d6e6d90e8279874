// MemBackingFile: an in-memory, sparse BackingFile for unit tests (LevelDB's MemEnv idea).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "fs/core/backing_file.h"

namespace kmsfs::fakes {

// Pages that were never written read as zeros and cost no memory, so a 5 GiB sparse file is
// cheap. Counts the bytes and calls written so tests can check how much I/O an operation did.
// The Raw* helpers let tamper tests change bytes behind the FileContent's back.
// Thread-safe (one mutex).
class MemBackingFile final : public fs::BackingFile {
 public:
  static constexpr size_t kPage = 4096;

  Result<size_t> PRead(std::span<uint8_t> buf, uint64_t offset) override;
  Status PWrite(ByteSpan data, uint64_t offset) override;
  Result<uint64_t> Size() override;
  Status Truncate(uint64_t size) override;
  Status Sync(bool data_only) override;

  // Test helpers (no counters touched).
  Bytes RawRead(uint64_t offset, size_t len) const;     // zeros past the end
  void RawWrite(uint64_t offset, ByteSpan data);        // may extend
  void RawTruncate(uint64_t size);
  uint64_t RawSize() const;
  Bytes Snapshot() const;                               // every byte; only for small files
  void Restore(ByteSpan bytes);                         // replaces all content

  uint64_t bytes_written() const;
  uint64_t write_calls() const;
  uint64_t read_calls() const;
  size_t pages_allocated() const;
  uint64_t sync_calls() const;
  void ResetCounters();

 private:
  using Page = std::unique_ptr<uint8_t[]>;
  void WriteLocked(uint64_t offset, ByteSpan data);
  void TruncateLocked(uint64_t size);
  void ReadLocked(uint64_t offset, std::span<uint8_t> out) const;

  mutable std::mutex mu_;
  std::map<uint64_t, Page> pages_;  // page index -> kPage bytes; guarded by mu_
  uint64_t size_ = 0;               // guarded by mu_
  uint64_t bytes_written_ = 0;      // guarded by mu_
  uint64_t write_calls_ = 0;        // guarded by mu_
  mutable uint64_t read_calls_ = 0; // guarded by mu_
  uint64_t sync_calls_ = 0;         // guarded by mu_
};

}  // namespace kmsfs::fakes
