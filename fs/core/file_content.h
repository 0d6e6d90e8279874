// FileContent: plaintext reads, writes and truncation of one file over its ciphertext (layout v1).
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
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
// checks — with a message naming the block number (never plaintext); kIo from the backing file;
// kInvalidArgument (EFBIG) beyond format::kMaxPlaintextSize.
//
// Thread-safety: all methods may be called concurrently; reads share a lock, writes and
// truncates take it exclusively (the FUSE layer may still order them). The instance owns the
// content key (wiped on destruction) and a borrowed BackingFile that must outlive it.
class FileContent {
 public:
  // `dek` is the file's 32-byte data key (used directly as the AES-256-GCM content key).
  static Result<std::unique_ptr<FileContent>> Open(const format::Id128& volume_id,
                                                   const format::Id128& file_id,
                                                   const crypto::SecretBytes& dek,
                                                   BackingFile* backing);
  ~FileContent();
  FileContent(const FileContent&) = delete;
  FileContent& operator=(const FileContent&) = delete;

  // Writes the metadata for an empty file (block 0: FINAL, length 0) after a fresh header.
  // Called once by whoever created the backing file.
  Status InitializeEmpty();

  // Plaintext size derived from the backing size (kCorrupt if the backing size is impossible).
  Result<uint64_t> Size();
  // Reads up to buf.size() bytes at `offset`; short only at end of file; 0 at/after EOF.
  // kCorrupt if any block touched fails authentication: no partial plaintext of that block.
  Result<size_t> Read(std::span<uint8_t> buf, uint64_t offset);
  // Writes all of `data` at `offset`, extending the file (with authenticated holes) if needed.
  Status Write(ByteSpan data, uint64_t offset);
  // Shrinks or extends (with holes) to exactly `size`.
  Status Truncate(uint64_t size);

 private:
  struct Impl;
  explicit FileContent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kmsfs::fs
