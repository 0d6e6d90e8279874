// FileHeader: the first page of every backing file: magic, version, file id, wrapped DEK.
#pragma once

#include <cstdint>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/format/ids.h"

namespace kmsfs::format {

// Layout v1, exactly 4096 bytes (all integers big-endian; spec: docs/format.md):
//   magic "KMSF" | version u16 (=1) | flags u32 (=0 in v1) | file_id[16] | blob_len u16 |
//   wrapped DEK (a WrappedBlob, blob_len bytes) | zero padding up to 4096
// The header carries no MAC of its own: the wrapped DEK is bound to the encryption context
// {kmsfs:volume, kmsfs:file} (FileDekContext), so a changed file id or blob fails to unwrap, and
// every block's AAD repeats the file id. A full page keeps the data pages page-aligned.
struct FileHeader {
  static constexpr uint16_t kVersion = 1;
  static constexpr size_t kSize = 4096;
  static constexpr size_t kFixedLen = 4 + 2 + 4 + kId128Len + 2;  // 28: magic..blob_len
  static constexpr size_t kMaxBlobLen = kSize - kFixedLen;        // 4068

  // A DEK is 256 bits, and AES-GCM ciphertext is as long as its plaintext.
  static constexpr size_t kWrappedDekCiphertextLen = 32;

  Id128 file_id{};
  // A serialized WrappedBlob whose ciphertext is kWrappedDekCiphertextLen bytes: the bytes go
  // to keyd's Decrypt as they are, so they are kept serialized rather than parsed.
  Bytes wrapped_dek;

  friend bool operator==(const FileHeader&, const FileHeader&) = default;
};

// `page` must be exactly kSize bytes (a shorter backing file is truncated: kCorrupt).
// Strict: magic, version 1, flags 0, a nonzero file id, blob_len within the page, the blob itself
// parses and wraps 32 bytes, and every padding byte is zero. kCorrupt on any violation. A version
// other than 1 is kCorrupt too: a later header version is only ever written into a volume whose
// kmsfs.conf Format says so, and an older kmsfs refuses that volume at mount.
Result<FileHeader> ParseFileHeader(ByteSpan page);

// Exactly kSize bytes. kInvalidArgument if wrapped_dek is not a blob ParseFileHeader would accept.
Result<Bytes> SerializeFileHeader(const FileHeader& header);

}  // namespace kmsfs::format
