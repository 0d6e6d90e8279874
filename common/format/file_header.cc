#include "common/format/file_header.h"

#include <algorithm>

#include "common/format/block_layout.h"
#include "common/format/byte_reader.h"
#include "common/format/wrapped_blob.h"

namespace kmsfs::format {
namespace {

using internal::AppendBytes;
using internal::AppendU16;
using internal::AppendU32;

constexpr uint8_t kMagic[4] = {'K', 'M', 'S', 'F'};
constexpr uint8_t kLinkMacLabel[4] = {'K', 'M', 'L', 'N'};
static_assert(FileHeader::kSize == kHeaderPageSize, "the header is the first page");
static_assert(FileHeader::kFixedLen + WrappedBlob::kMinLen <= FileHeader::kKeyRegionSize);
static_assert(FileHeader::kSlotOffset[0] == FileHeader::kKeyRegionSize);
static_assert(FileHeader::kSlotOffset[1] == FileHeader::kSlotOffset[0] + FileHeader::kSlotSize);
static_assert(FileHeader::kSlotOffset[1] + FileHeader::kSlotSize == FileHeader::kSize);
// Each slot starts on a 512-byte sector boundary, so it shares no sector with the key region or
// the other slot: a torn slot write can damage nothing but that slot.
static_assert(FileHeader::kSlotOffset[0] % 512 == 0 && FileHeader::kSlotOffset[1] % 512 == 0);
static_assert(FileHeader::kSlotFixedLen + FileHeader::kMaxLinkTags * 16 + 4 <=
              FileHeader::kSlotSize);

Error Corrupt(const char* what) {
  return Error(Code::kCorrupt, std::string("file header: ") + what);
}

// Why `blob` can't be a header's wrapped DEK; empty if it can.
std::string WrappedDekProblem(ByteSpan blob) {
  if (blob.size() > FileHeader::kMaxBlobLen) return "wrapped key length out of range";
  auto parsed = ParseWrappedBlob(blob);
  if (!parsed.ok()) return parsed.error().message();
  if (parsed->ciphertext.size() != FileHeader::kWrappedDekCiphertextLen) {
    return "wrapped key is not a 256-bit key";
  }
  return {};
}

struct Crc32cTable {
  uint32_t v[256];
  constexpr Crc32cTable() : v() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      v[i] = c;
    }
  }
};
constexpr Crc32cTable kCrcTable;

enum class SlotState { kEmpty, kValid, kInvalid };

struct Slot {
  SlotState state = SlotState::kInvalid;
  uint32_t seq = 0;
  std::vector<LinkTag> tags;
};

bool StrictlyAscending(const std::vector<LinkTag>& tags) {
  for (size_t i = 1; i < tags.size(); ++i) {
    if (!(tags[i - 1] < tags[i])) return false;
  }
  return true;
}

Slot ParseSlot(ByteSpan b) {
  Slot s;
  if (internal::AllZero(b)) {
    s.state = SlotState::kEmpty;
    return s;
  }
  internal::ByteReader r(b);
  uint16_t count, reserved;
  if (!r.ReadU32(&s.seq) || !r.ReadU16(&count) || !r.ReadU16(&reserved)) return s;
  if (s.seq == 0 || reserved != 0 || count > FileHeader::kMaxLinkTags) return s;
  s.tags.resize(count);
  for (auto& t : s.tags) {
    if (!r.ReadArray(&t)) return s;
  }
  if (!StrictlyAscending(s.tags)) return s;
  ByteSpan padding;
  if (!r.ReadBytes(r.remaining() - 4, &padding) || !internal::AllZero(padding)) return s;
  uint32_t crc;
  if (!r.ReadU32(&crc) || crc != Crc32c(b.first(FileHeader::kSlotSize - 4))) return s;
  s.state = SlotState::kValid;
  return s;
}

// A slot holding `tags` (sorted, unique, at most kMaxLinkTags) under `seq`; all zero for seq 0.
Bytes SerializeSlot(uint32_t seq, const std::vector<LinkTag>& tags) {
  Bytes out;
  out.reserve(FileHeader::kSlotSize);
  if (seq == 0) {
    out.resize(FileHeader::kSlotSize, 0);
    return out;
  }
  AppendU32(&out, seq);
  AppendU16(&out, uint16_t(tags.size()));
  AppendU16(&out, 0);
  for (const auto& t : tags) AppendBytes(&out, t);
  out.resize(FileHeader::kSlotSize - 4, 0);
  AppendU32(&out, Crc32c(out));
  return out;
}

}  // namespace

uint32_t Crc32c(ByteSpan data) {
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t b : data) c = kCrcTable.v[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

bool FileHeader::HasLink(const LinkTag& tag) const {
  // Not std::binary_search / operator< (their early exits leak, through timing, how many leading
  // bytes of a guessed tag match a stored one), and not crypto::ConstantTimeEqual either:
  // kmsfs_format links no crypto (common/format/CMakeLists.txt), and OpenSSL is for
  // common/crypto only (scripts/check-deps.sh). So: every byte of every tag is looked at, and
  // the differences are accumulated without a branch. Only whether some tag matched leaks.
  uint8_t found = 0;
  for (const LinkTag& t : links) {
    uint8_t diff = 0;
    for (size_t i = 0; i < t.size(); ++i) diff |= uint8_t(t[i] ^ tag[i]);
    // 1 iff diff == 0, computed without a branch.
    found |= uint8_t(1 & ((unsigned(diff) - 1) >> 8));
  }
  return found != 0;
}

Result<FileHeader> ParseFileHeader(ByteSpan page) {
  if (page.size() != FileHeader::kSize) return Corrupt("not exactly one page");
  internal::ByteReader r(page.first(FileHeader::kKeyRegionSize));
  ByteSpan magic, blob;
  uint16_t version, blob_len;
  uint32_t flags;
  FileHeader header;
  // The size check above makes these reads infallible; they are still checked, so that a
  // change to kSize or kFixedLen can never turn into an out-of-bounds read.
  if (!r.ReadBytes(4, &magic) || !r.ReadU16(&version) || !r.ReadU32(&flags) ||
      !r.ReadArray(&header.file_id) || !r.ReadU16(&blob_len)) {
    return Corrupt("truncated");
  }
  if (!std::equal(magic.begin(), magic.end(), kMagic)) return Corrupt("bad magic");
  if (version != FileHeader::kVersion) return Corrupt("unknown version");
  if (flags != 0) return Corrupt("unknown flags");
  if (internal::AllZero(header.file_id)) return Corrupt("zero file id");
  if (blob_len > FileHeader::kMaxBlobLen) return Corrupt("wrapped key length out of range");
  if (!r.ReadBytes(blob_len, &blob)) return Corrupt("truncated wrapped key");
  if (std::string problem = WrappedDekProblem(blob); !problem.empty()) {
    return Error(Code::kCorrupt, "file header: " + problem);
  }
  // Zero padding: no byte of the key region is left unexplained, so nothing can be hidden in it
  // and every accepted page has exactly one meaning.
  ByteSpan padding;
  if (!r.ReadBytes(r.remaining(), &padding) || !internal::AllZero(padding)) {
    return Corrupt("nonzero padding");
  }
  header.wrapped_dek.assign(blob.begin(), blob.end());

  Slot slots[2];
  for (int i = 0; i < 2; ++i) {
    slots[i] = ParseSlot(page.subspan(FileHeader::kSlotOffset[i], FileHeader::kSlotSize));
  }
  if (slots[0].state == SlotState::kInvalid && slots[1].state == SlotState::kInvalid) {
    // Writers only ever write one slot at a time: two bad slots are damage, not a crash.
    return Corrupt("both link slots are damaged");
  }
  if (slots[0].state == SlotState::kValid && slots[1].state == SlotState::kValid &&
      slots[0].seq == slots[1].seq) {
    return Corrupt("two link slots with the same sequence number");
  }
  // The active slot: the valid one with the higher seq; with no valid slot, an empty one.
  int active;
  if (slots[0].state == SlotState::kValid && slots[1].state == SlotState::kValid) {
    active = slots[0].seq > slots[1].seq ? 0 : 1;
  } else if (slots[0].state == SlotState::kValid) {
    active = 0;
  } else if (slots[1].state == SlotState::kValid) {
    active = 1;
  } else {
    active = slots[0].state == SlotState::kEmpty ? 0 : 1;
  }
  header.active_slot = uint8_t(active);
  header.links_seq = slots[active].seq;
  header.links = std::move(slots[active].tags);
  const ByteSpan other = page.subspan(FileHeader::kSlotOffset[1 - active], FileHeader::kSlotSize);
  std::copy(other.begin(), other.end(), header.other_slot.begin());
  return header;
}

Result<Bytes> SerializeFileHeader(const FileHeader& header) {
  if (internal::AllZero(header.file_id)) {
    return Error(Code::kInvalidArgument, "file header: zero file id");
  }
  if (std::string problem = WrappedDekProblem(header.wrapped_dek); !problem.empty()) {
    return Error(Code::kInvalidArgument, "file header: " + problem);
  }
  if (header.active_slot > 1 || header.links.size() > FileHeader::kMaxLinkTags ||
      !StrictlyAscending(header.links) || (header.links_seq == 0 && !header.links.empty())) {
    return Error(Code::kInvalidArgument, "file header: inconsistent link set");
  }
  // The page must parse back to `header`: the other slot may not win over the active one.
  const Slot other = ParseSlot(header.other_slot);
  const bool other_wins =
      (other.state == SlotState::kValid && other.seq >= header.links_seq) ||
      (header.links_seq == 0 && other.state == SlotState::kEmpty && header.active_slot == 1);
  if (other_wins) return Error(Code::kInvalidArgument, "file header: inconsistent link slots");
  Bytes out;
  out.reserve(FileHeader::kSize);
  AppendBytes(&out, kMagic);
  AppendU16(&out, FileHeader::kVersion);
  AppendU32(&out, 0);  // flags: none defined in v1
  AppendBytes(&out, header.file_id);
  AppendU16(&out, uint16_t(header.wrapped_dek.size()));
  AppendBytes(&out, header.wrapped_dek);
  out.resize(FileHeader::kKeyRegionSize, 0);
  const Bytes active = SerializeSlot(header.links_seq, header.links);
  if (header.active_slot == 0) {
    AppendBytes(&out, active);
    AppendBytes(&out, header.other_slot);
  } else {
    AppendBytes(&out, header.other_slot);
    AppendBytes(&out, active);
  }
  return out;
}

Result<LinksWrite> PrepareLinksWrite(const FileHeader& header, std::vector<LinkTag> links) {
  std::sort(links.begin(), links.end());
  links.erase(std::unique(links.begin(), links.end()), links.end());
  if (links.size() > FileHeader::kMaxLinkTags) {
    return Error(Code::kInvalidArgument, "file header: too many links");
  }
  if (header.links_seq == UINT32_MAX) {
    return Error(Code::kFailedPrecondition, "file header: link sequence number exhausted");
  }
  // With no slot written yet, the first write goes to slot 0 unless slot 0 is the torn one.
  const int target =
      header.links_seq == 0 && header.active_slot == 0 && internal::AllZero(header.other_slot)
          ? 0
          : 1 - header.active_slot;
  LinksWrite w;
  w.offset = FileHeader::kSlotOffset[target];
  w.bytes = SerializeSlot(header.links_seq + 1, links);
  // With a set in force, the target is the inactive slot, and the active one is what the new
  // write supersedes. With none (links_seq 0), the slot not written is empty already (see the
  // choice of `target` above and ParseFileHeader's choice of active_slot).
  w.clear_previous = header.links_seq != 0;
  w.previous_offset = FileHeader::kSlotOffset[1 - target];
  return w;
}

Result<Bytes> LinkMacInput(const Id128& volume_id, const Id128& file_id, const Id128& dir_id,
                           std::string_view backing_name) {
  if (backing_name.empty() || backing_name.size() > 255) {
    return Error(Code::kInvalidArgument, "link: backing name must be 1..255 bytes");
  }
  Bytes out;
  out.reserve(4 + 3 * kId128Len + 2 + backing_name.size());
  AppendBytes(&out, kLinkMacLabel);
  AppendBytes(&out, volume_id);
  AppendBytes(&out, file_id);
  AppendBytes(&out, dir_id);
  AppendU16(&out, uint16_t(backing_name.size()));
  AppendBytes(&out, AsBytes(backing_name));
  return out;
}

}  // namespace kmsfs::format
