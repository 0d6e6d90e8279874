// FileContent: plaintext reads, writes and truncation of one file over its ciphertext (layout v1).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"
#include "common/format/ids.h"
#include "fs/core/backing_file.h"

namespace kmsfs::fs {

// Implements docs/format.md "Block layout v1" over a BackingFile whose header page is already
// written: AES-256-GCM per 4 KiB block with a fresh random nonce per block write, AAD from
// format::BlockAad (volume id, file id, block index, FINAL/HOLE flags, length), FINAL on the
// last block, HOLE entries for sparse regions.
//
// Errors: kCorrupt when a block, entry or the backing size fails authentication or structure
// checks — with a message naming the file id and block number (never plaintext); kIo from the
// backing file (errno kept); kInvalidArgument with sys_errno EFBIG beyond
// format::kMaxPlaintextSize.
//
// Write order (format.md §7.6): data pages first, then the metadata entries that authenticate
// them, batch by batch. A crash in between leaves the blocks of that batch failing
// authentication (EIO) until rewritten; every other block still reads.
// Failure (not crash) semantics: when a Write or Truncate fails part-way (ENOSPC, EIO), the
// blocks whose old bytes partly survive it (partially written first/last block, the old final
// block) are restored and an extension is cut back to the old size, so bytes outside the failed
// range read as before. Blocks the failed write covered completely may read as EIO until
// rewritten (their old ciphertext was never read, so it cannot be put back).
//
// Thread-safety: all methods may be called concurrently; Read and Size share a lock, Write,
// Truncate and InitializeEmpty take it exclusively. The instance owns the content key schedule
// (wiped on destruction) and borrows a BackingFile that must outlive it. Scratch buffers are per
// thread and reused, so steady-state I/O allocates nothing.
class FileContent {
 public:
  // `dek` is the file's 32-byte data key (used directly as the AES-256-GCM content key); it is
  // only read during Open. kInvalidArgument if it is not 32 bytes. No I/O.
  static Result<std::unique_ptr<FileContent>> Open(const format::Id128& volume_id,
                                                   const format::Id128& file_id,
                                                   const crypto::SecretBytes& dek,
                                                   BackingFile* backing);
  ~FileContent();
  FileContent(const FileContent&) = delete;
  FileContent& operator=(const FileContent&) = delete;

  // Writes the metadata page of an empty file (block 0: FINAL, length 0) after a fresh header.
  // Called once by whoever created the backing file (CreateFile). kFailedPrecondition unless the
  // backing file holds exactly the header page.
  Status InitializeEmpty();

  // Plaintext size derived from the backing size (kCorrupt if the backing size is impossible).
  Result<uint64_t> Size();
  // Reads up to buf.size() bytes at `offset`; short only at end of file; 0 at/after EOF.
  // kCorrupt if any block touched fails authentication; `buf` is then zeroed, so no plaintext of
  // a failed read is ever handed out. Full blocks are decrypted in place in `buf`.
  Result<size_t> Read(std::span<uint8_t> buf, uint64_t offset);
  // Writes all of `data` at `offset`, extending the file (with authenticated holes) if needed.
  // An empty `data` changes nothing.
  Status Write(ByteSpan data, uint64_t offset);
  // Shrinks or extends (with holes) to exactly `size`.
  Status Truncate(uint64_t size);
  // The backing file was changed by someone else (another FileContent over the same file):
  // the next call reads its size again instead of trusting the one this object last saw.
  void ForgetBackingSize();

 private:
  struct Impl;
  explicit FileContent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kmsfs::fs
