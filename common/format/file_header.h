// FileHeader: the first page of every backing file: file id, wrapped DEK, and the link tags that
// bind the file to the directory entries that name it.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/format/ids.h"

namespace kmsfs::format {

// A link tag: HMAC-SHA256(link key, LinkMacInput(...)) truncated to 16 bytes (docs/format.md §6.2).
using LinkTag = std::array<uint8_t, 16>;

// Layout v1, exactly 4096 bytes (all integers big-endian; spec: docs/format.md §6):
//   [0, 1024)    key region: magic "KMSF" | version u16 (=1) | flags u32 (=0) | file_id[16] |
//                blob_len u16 | wrapped DEK (a WrappedBlob, blob_len bytes) | zero padding
//   [1024, 2560) links slot 0 \  each: seq u32 | count u16 | reserved u16 (=0) |
//   [2560, 4096) links slot 1 /        count × tag[16] (strictly ascending) | zero | crc32c u32
// The key region carries no MAC of its own: the wrapped DEK is bound to the encryption context
// {kmsfs:volume, kmsfs:file} (FileDekContext), so a changed file id or blob fails to unwrap, and
// every block's AAD repeats the file id. The link slots are rewritten alternately (the inactive
// one, with seq + 1), so a torn write of one slot leaves the other, previous, set in force, and
// the key region is never rewritten by a link change. A full page keeps data pages aligned.
struct FileHeader {
  static constexpr uint16_t kVersion = 1;
  static constexpr size_t kSize = 4096;
  static constexpr size_t kFixedLen = 4 + 2 + 4 + kId128Len + 2;     // 28: magic..blob_len
  static constexpr size_t kKeyRegionSize = 1024;                     // bytes [0, 1024)
  static constexpr size_t kMaxBlobLen = kKeyRegionSize - kFixedLen;  // 996
  static constexpr size_t kSlotSize = 1536;
  static constexpr size_t kSlotOffset[2] = {1024, 2560};
  static constexpr size_t kSlotFixedLen = 8;  // seq, count, reserved
  // Tags that fit in a slot: (1536 - 8 - 4) / 16.
  static constexpr size_t kMaxLinkTags = (kSlotSize - kSlotFixedLen - 4) / 16;  // 95

  // A DEK is 256 bits, and AES-GCM ciphertext is as long as its plaintext.
  static constexpr size_t kWrappedDekCiphertextLen = 32;

  Id128 file_id{};
  // A serialized WrappedBlob whose ciphertext is kWrappedDekCiphertextLen bytes: the bytes go
  // to keyd's Decrypt as they are, so they are kept serialized rather than parsed.
  Bytes wrapped_dek;

  // The link set in force: the tags of the valid slot with the higher seq (sorted ascending,
  // no duplicates). links_seq == 0 means no slot was ever written (links empty): a header of a
  // volume without feature "header-links", or one whose first link write was torn.
  uint32_t links_seq = 0;
  std::vector<LinkTag> links;
  // Which slot holds that set (0 or 1), and the other slot's bytes kept verbatim: all zero
  // after a completed link change (LinksWrite::clear_previous), the previous set or a torn
  // write after a crash; it is overwritten by the next link change.
  uint8_t active_slot = 0;
  std::array<uint8_t, kSlotSize> other_slot{};

  // Compares `tag` with every tag in the set in constant time per tag (no early exit): the
  // tags are MACs, and a timing difference must not tell how much of a forged one matched.
  bool HasLink(const LinkTag& tag) const;
  friend bool operator==(const FileHeader&, const FileHeader&) = default;
};

// `page` must be exactly kSize bytes (a shorter backing file is truncated: kCorrupt).
// Strict: magic, version 1, flags 0, a nonzero file id, blob_len within the key region, the blob
// itself parses and wraps 32 bytes, every padding byte of the key region is zero, and at least
// one slot is all zero or valid (seq >= 1, count <= kMaxLinkTags, reserved 0, tags strictly
// ascending, zero padding, crc32c matching); two valid slots with equal seq are kCorrupt.
// A slot that is neither (a torn write) is kept as `other_slot` and ignored. kCorrupt on any
// violation. A version other than 1 is kCorrupt too: a later header version is only ever
// written into a volume whose kmsfs.conf says so, and an older kmsfs refuses that volume.
Result<FileHeader> ParseFileHeader(ByteSpan page);

// Exactly kSize bytes, such that ParseFileHeader gives `header` back. kInvalidArgument if
// wrapped_dek is not a blob ParseFileHeader would accept, or the link fields are inconsistent
// (links not sorted/unique, more than kMaxLinkTags, links without a seq, active_slot > 1, or
// other_slot a valid slot whose seq is not below links_seq).
// To change only the wrapped DEK (`kmsfs rewrap`), parse, replace wrapped_dek, serialize, and
// write back bytes [0, kKeyRegionSize) only: the link slots stay as they are.
Result<Bytes> SerializeFileHeader(const FileHeader& header);

// One slot write that makes `links` the header's link set: the slot that is not active in
// `header`, with seq = header.links_seq + 1. Write `bytes` at `offset` in the backing file (one
// pwrite), and the next parse sees the new set; a crash part-way leaves the previous set.
// Then, once that write is durable (fdatasync), zero the previously active slot if
// `clear_previous` (kSlotSize zero bytes at `previous_offset`), so that no superseded set (tags
// of names the file no longer has) stays on disk for an attacker to roll forward: docs/format.md
// §6.1. Zeroing before the new slot is durable could leave no valid slot after a crash.
// `links` need not be sorted; duplicates are dropped. kInvalidArgument for more than
// kMaxLinkTags distinct tags, kFailedPrecondition if the seq would wrap (2^32 - 1 changes).
struct LinksWrite {
  uint64_t offset = 0;
  Bytes bytes;  // kSlotSize bytes
  // False when no set was in force (links_seq == 0): the other slot is then empty already.
  bool clear_previous = false;
  uint64_t previous_offset = 0;
};
Result<LinksWrite> PrepareLinksWrite(const FileHeader& header, std::vector<LinkTag> links);

// The HMAC input of a link tag (docs/format.md §6.2):
//   "KMLN" | volume_id[16] | file_id[16] | dir_id[16] | name_len u16 | backing_name
// `backing_name` is the entry's name in its backing directory (the encoded name, or the
// kmsfs.longname.* name for long names): 1..255 bytes, else kInvalidArgument.
Result<Bytes> LinkMacInput(const Id128& volume_id, const Id128& file_id, const Id128& dir_id,
                           std::string_view backing_name);

// CRC-32C (Castagnoli), as used by the link slots to tell a torn write from a complete one. Not
// a MAC: the tags authenticate themselves.
uint32_t Crc32c(ByteSpan data);

}  // namespace kmsfs::format
