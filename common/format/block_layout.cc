#include "common/format/block_layout.h"

#include <algorithm>

#include "common/base/check.h"
#include "common/format/byte_reader.h"

namespace kmsfs::format {

static_assert(kGroupSize == uint64_t{129} * 4096);
static_assert(kMaxPlaintextSize / kBlocksPerGroup * (kBlocksPerGroup + 1) + kHeaderPageSize +
                      kMetaPageSize <
                  (uint64_t{1} << 63),
              "every backing offset fits in off_t");

uint64_t BlockCount(uint64_t plaintext_size) {
  KMSFS_CHECK(plaintext_size <= kMaxPlaintextSize);
  if (plaintext_size == 0) return 1;
  return (plaintext_size - 1) / kBlockSize + 1;  // ceil without overflow
}

uint32_t BlockPlaintextLen(uint64_t plaintext_size, uint64_t block) {
  const uint64_t n = BlockCount(plaintext_size);
  KMSFS_CHECK(block < n);
  if (block + 1 < n) return kBlockSize;
  return uint32_t(plaintext_size - block * kBlockSize);  // 0..4096 for the last block
}

uint64_t MetaOffset(uint64_t block) {
  KMSFS_CHECK(block < kMaxBlocks);
  return kHeaderPageSize + (block / kBlocksPerGroup) * kGroupSize;
}

uint32_t EntryOffsetInMeta(uint64_t block) {
  KMSFS_CHECK(block < kMaxBlocks);
  return uint32_t(block % kBlocksPerGroup) * kMetaEntrySize;
}

uint64_t DataOffset(uint64_t block) {
  return MetaOffset(block) + kMetaPageSize + (block % kBlocksPerGroup) * kBlockSize;
}

Result<uint64_t> BackingSizeForPlaintextSize(uint64_t plaintext_size) {
  if (plaintext_size > kMaxPlaintextSize) {
    return Error(Code::kInvalidArgument, "block layout: file size beyond the format's maximum");
  }
  const uint64_t last = BlockCount(plaintext_size) - 1;
  return DataOffset(last) + BlockPlaintextLen(plaintext_size, last);
}

Result<uint64_t> PlaintextSizeForBackingSize(uint64_t backing_size) {
  auto corrupt = [](const char* what) {
    return Error(Code::kCorrupt, std::string("block layout: backing size ") + what);
  };
  if (backing_size < kMinBackingSize) return corrupt("below header + one metadata page");
  const uint64_t body = backing_size - kHeaderPageSize;
  const uint64_t groups = body / kGroupSize;
  const uint64_t rest = body % kGroupSize;
  uint64_t size;
  if (rest == 0) {
    // Ends exactly at a group boundary: `groups` full groups (body >= 4096 so groups >= 1).
    size = groups * kBlocksPerGroup * kBlockSize;
  } else if (rest < kMetaPageSize) {
    return corrupt("ends inside a metadata page");
  } else if (rest == kMetaPageSize) {
    // A metadata page and no data: only an empty file (group 0) looks like this. For a later
    // group, the last data block would have length 0, which no writer produces.
    if (groups != 0) return corrupt("ends with a group that holds no data");
    size = 0;
  } else {
    size = groups * kBlocksPerGroup * kBlockSize + (rest - kMetaPageSize);
  }
  if (size > kMaxPlaintextSize) return corrupt("beyond the format's maximum");
  return size;
}

bool MetaEntry::IsEmpty() const {
  return flags == 0 && internal::AllZero(nonce) && internal::AllZero(tag);
}

Result<MetaEntry> ParseMetaEntry(ByteSpan entry) {
  auto corrupt = [](const char* what) {
    return Error(Code::kCorrupt, std::string("metadata entry: ") + what);
  };
  if (entry.size() != kMetaEntrySize) return corrupt("not 32 bytes");
  MetaEntry e;
  std::copy(entry.begin(), entry.begin() + 12, e.nonce.begin());
  std::copy(entry.begin() + 12, entry.begin() + 28, e.tag.begin());
  e.flags = entry[28];
  if (!internal::AllZero(entry.subspan(29, 3))) return corrupt("nonzero reserved bytes");
  if (internal::AllZero(entry)) return e;  // empty: no block here
  if ((e.flags & ~kEntryKnownFlags) != 0) return corrupt("unknown flags");
  if (internal::AllZero(e.nonce)) return corrupt("zero nonce in a present entry");
  return e;
}

Result<std::array<uint8_t, kMetaEntrySize>> SerializeMetaEntry(const MetaEntry& entry) {
  std::array<uint8_t, kMetaEntrySize> out{};
  if (entry.IsEmpty()) return out;
  if ((entry.flags & ~kEntryKnownFlags) != 0) {
    return Error(Code::kInvalidArgument, "metadata entry: unknown flags");
  }
  if (internal::AllZero(entry.nonce)) {
    return Error(Code::kInvalidArgument, "metadata entry: the all-zero nonce marks empty entries");
  }
  std::copy(entry.nonce.begin(), entry.nonce.end(), out.begin());
  std::copy(entry.tag.begin(), entry.tag.end(), out.begin() + 12);
  out[28] = entry.flags;
  return out;
}

Status CheckEntryForBlock(const MetaEntry& entry, uint64_t block, uint64_t block_count) {
  auto corrupt = [](const char* what) {
    return Error(Code::kCorrupt, std::string("metadata entry: ") + what);
  };
  if (block_count == 0) return corrupt("file without blocks");
  const uint64_t last = block_count - 1;
  if (block > last) {
    if (!entry.IsEmpty()) return corrupt("block after the final block");
    return Status::Ok();
  }
  if (entry.IsEmpty()) return corrupt("missing block");
  if (block < last && entry.IsFinal()) return corrupt("final block before the end of the file");
  if (block == last && !entry.IsFinal()) return corrupt("last block not marked final");
  return Status::Ok();
}

std::array<uint8_t, kBlockAadLen> BlockAad(std::span<const uint8_t, 16> volume_id,
                                           std::span<const uint8_t, 16> file_id,
                                           uint64_t block_index, uint8_t flags,
                                           uint32_t plaintext_len) {
  KMSFS_CHECK((flags & ~kEntryKnownFlags) == 0);
  KMSFS_CHECK(plaintext_len <= kBlockSize);
  std::array<uint8_t, kBlockAadLen> aad{};
  uint8_t* p = aad.data();
  p[0] = 'K';
  p[1] = 'M';
  p[2] = 'B';
  p[3] = '1';
  std::copy(volume_id.begin(), volume_id.end(), p + 4);
  std::copy(file_id.begin(), file_id.end(), p + 20);
  PutU64(p + 36, block_index);
  p[44] = flags;
  PutU32(p + 45, plaintext_len);
  return aad;
}

}  // namespace kmsfs::format
