// BlockLayout v1 ("interleaved metadata"): where each block's ciphertext and nonce/tag live in a
// backing file, the plaintext/backing size mapping, metadata entries, and the block AAD.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "common/base/bytes.h"
#include "common/base/status.h"

namespace kmsfs::format {

// Backing file = [header page] then groups; group g = [metadata page][up to 128 data pages].
// Data pages sit on 4 KiB boundaries of the backing file (like dm-integrity's interleaving), so a
// 4 KiB plaintext write touches one data page plus one 32-byte entry, never two data pages.
inline constexpr uint32_t kBlockSize = 4096;       // plaintext bytes per block
inline constexpr uint64_t kHeaderPageSize = 4096;  // FileHeader::kSize
inline constexpr uint64_t kMetaPageSize = 4096;
inline constexpr uint32_t kMetaEntrySize = 32;
inline constexpr uint64_t kBlocksPerGroup = kMetaPageSize / kMetaEntrySize;  // 128
inline constexpr uint64_t kGroupSize = kMetaPageSize + kBlocksPerGroup * kBlockSize;
// Header + the metadata page holding block 0's entry: the backing size of an empty file.
inline constexpr uint64_t kMinBackingSize = kHeaderPageSize + kMetaPageSize;  // 8192
// 2^48 blocks = 1 EiB of plaintext: far beyond any backing fs, and small enough that every
// offset below fits in a signed 64-bit off_t with room to spare.
inline constexpr uint64_t kMaxBlocks = uint64_t{1} << 48;
inline constexpr uint64_t kMaxPlaintextSize = kMaxBlocks * kBlockSize;

// n = max(1, ceil(size / 4096)): even an empty file has a block 0 (FINAL, length 0), so cutting
// a file down to its header is detected. REQUIRES: size <= kMaxPlaintextSize.
uint64_t BlockCount(uint64_t plaintext_size);
// Plaintext length of `block` in a file of `plaintext_size`: 4096 except for the last block.
// REQUIRES: block < BlockCount(plaintext_size).
uint32_t BlockPlaintextLen(uint64_t plaintext_size, uint64_t block);

// Offsets in the backing file. REQUIRES: block < kMaxBlocks (checked: a violation is a bug in
// the caller, which must bound offsets by kMaxPlaintextSize first, e.g. EFBIG).
uint64_t MetaOffset(uint64_t block);         // the metadata page holding block's entry
uint32_t EntryOffsetInMeta(uint64_t block);  // the entry's offset inside that page
uint64_t DataOffset(uint64_t block);         // the block's ciphertext

// kInvalidArgument if size > kMaxPlaintextSize.
Result<uint64_t> BackingSizeForPlaintextSize(uint64_t plaintext_size);
// The exact inverse. kCorrupt if `backing_size` is below kMinBackingSize, ends inside a metadata
// page, ends right after a metadata page other than the first (a group without data), or maps
// beyond kMaxPlaintextSize: no valid writer produces such a size.
Result<uint64_t> PlaintextSizeForBackingSize(uint64_t backing_size);

// Metadata entry: nonce[12] | tag[16] | flags u8 | reserved[3] (=0).
inline constexpr uint8_t kEntryFinal = 0x01;  // this is the file's last block
inline constexpr uint8_t kEntryHole = 0x02;   // all zeros, nothing stored; tag covers the AAD only
inline constexpr uint8_t kEntryKnownFlags = kEntryFinal | kEntryHole;

struct MetaEntry {
  std::array<uint8_t, 12> nonce{};
  std::array<uint8_t, 16> tag{};
  uint8_t flags = 0;

  // All 32 bytes zero: "no block here", valid only after the FINAL block. Writers never use the
  // all-zero nonce, so an entry is empty exactly when its nonce is zero.
  bool IsEmpty() const;
  bool IsFinal() const { return (flags & kEntryFinal) != 0; }
  bool IsHole() const { return (flags & kEntryHole) != 0; }

  friend bool operator==(const MetaEntry&, const MetaEntry&) = default;
};

// `entry` must be exactly 32 bytes. Accepts the all-zero (empty) entry; otherwise requires a
// nonzero nonce, no unknown flag bits and zero reserved bytes. kCorrupt on any violation.
Result<MetaEntry> ParseMetaEntry(ByteSpan entry);
// kInvalidArgument on unknown flag bits, or a zero nonce in a non-empty entry.
Result<std::array<uint8_t, kMetaEntrySize>> SerializeMetaEntry(const MetaEntry& entry);

// Whether `entry` may sit at `block` of a file with `block_count` blocks (BlockCount of the size
// derived from the backing size): blocks before the last are present and not FINAL, the last is
// FINAL, and entries past it are empty. kCorrupt otherwise: the file was truncated, extended or
// had an entry zeroed. Authenticity is still the AEAD's job; this only checks the structure.
Status CheckEntryForBlock(const MetaEntry& entry, uint64_t block, uint64_t block_count);

// The AEAD additional data of one block:
//   "KMB1" | volume_id[16] | file_id[16] | block_index u64 | flags u8 | plaintext_len u32
// Binds the block to its volume, file and position, to FINAL/HOLE and to its length, so blocks
// can't be moved, a file can't be cut or extended at a block boundary, and a hole can't be faked.
// REQUIRES: no unknown flag bits, plaintext_len <= kBlockSize.
inline constexpr size_t kBlockAadLen = 4 + 16 + 16 + 8 + 1 + 4;  // 49
std::array<uint8_t, kBlockAadLen> BlockAad(std::span<const uint8_t, 16> volume_id,
                                           std::span<const uint8_t, 16> file_id,
                                           uint64_t block_index, uint8_t flags,
                                           uint32_t plaintext_len);

}  // namespace kmsfs::format
