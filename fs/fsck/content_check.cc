// ContentCheck over block layout v1 (docs/format.md §7, docs/fsck.md "Content").
//
// Two phases: first every entry and block is read and classified without writing anything;
// then, only if repair was asked and the file is repairable at all, the decided repairs are
// applied in an order that keeps each step valid on its own (size first, then blocks, data page
// before entry, then fsync).
#include "fs/fsck/content_check.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "common/base/check.h"
#include "common/crypto/aead.h"
#include "common/crypto/random.h"
#include "common/format/block_layout.h"

namespace kmsfs::fs::fsck {
namespace {

using format::MetaEntry;

constexpr uint64_t kBlock = format::kBlockSize;
constexpr uint64_t kPerGroup = format::kBlocksPerGroup;
constexpr uint64_t kGroupPlain = kPerGroup * kBlock;  // plaintext bytes per group (512 KiB)

uint64_t EntryOffset(uint64_t block) {
  return format::MetaOffset(block) + format::EntryOffsetInMeta(block);
}
uint64_t GroupEnd(uint64_t block) { return (block / kPerGroup) * kPerGroup + kPerGroup - 1; }

// A damaged block and why; consecutive blocks with the same reason are reported as one range.
struct Bad {
  uint64_t block;
  const char* why;
};

class Checker {
 public:
  Checker(const format::Id128& volume_id, const format::Id128& file_id, crypto::Aes256Gcm gcm,
          BackingFile* backing)
      : volume_id_(volume_id), file_id_(file_id), gcm_(std::move(gcm)), backing_(backing) {
    ct_.resize(kBlock);
    pt_.resize(kBlock);
  }

  // Whether block `i` with entry `e` authenticates as a block of `len` plaintext bytes. For a
  // data block the first `len` bytes of its data page are the ciphertext; a short page fails.
  // On success the plaintext is in pt_[0, len).
  Result<bool> Auth(uint64_t i, const MetaEntry& e, uint32_t len, bool reread = true) {
    std::span<const uint8_t> ct;
    if (!e.IsHole() && len > 0) {
      if (reread) {
        KMSFS_ASSIGN_OR_RETURN(size_t got, backing_->PRead(std::span<uint8_t>(ct_.data(), kBlock),
                                                           format::DataOffset(i)));
        have_ = got;
      }
      if (have_ < len) return false;
      ct = std::span<const uint8_t>(ct_.data(), len);
    }
    const auto aad = format::BlockAad(volume_id_, file_id_, i, e.flags, len);
    std::span<uint8_t> pt(pt_.data(), ct.size());
    Status st = gcm_.Open(e.nonce, aad, ct, e.tag, pt);
    if (st.ok()) {
      if (e.IsHole()) std::memset(pt_.data(), 0, len);
      return true;
    }
    if (st.code() == Code::kCorrupt) return false;
    return st.error();
  }

  // Seals `len` bytes of pt_ (zeros unless the caller filled it) as block `i` with `flags` and
  // writes data page, then entry. A HOLE stores nothing: its tag covers the AAD alone.
  Status Seal(uint64_t i, uint8_t flags, uint32_t len) {
    const uint32_t stored = (flags & format::kEntryHole) != 0 ? 0 : len;
    MetaEntry e;
    do {
      crypto::RandomBytes(e.nonce);  // never the all-zero nonce: that marks an empty entry
    } while (std::all_of(e.nonce.begin(), e.nonce.end(), [](uint8_t c) { return c == 0; }));
    e.flags = flags;
    const auto aad = format::BlockAad(volume_id_, file_id_, i, flags, len);
    KMSFS_RETURN_IF_ERROR(gcm_.Seal(e.nonce, aad, std::span<const uint8_t>(pt_.data(), stored),
                                    std::span<uint8_t>(ct_.data(), stored), e.tag));
    if (stored > 0) {
      KMSFS_RETURN_IF_ERROR(backing_->PWrite(ByteSpan(ct_.data(), stored), format::DataOffset(i)));
    }
    KMSFS_ASSIGN_OR_RETURN(auto raw, format::SerializeMetaEntry(e));
    return backing_->PWrite(raw, EntryOffset(i));
  }

  Status ZeroEntries(uint64_t first, uint64_t last) {
    if (first > last) return Status::Ok();
    const Bytes zeros((last - first + 1) * format::kMetaEntrySize, 0);
    return backing_->PWrite(zeros, EntryOffset(first));
  }

  Result<ContentReport> Run(bool repair);

 private:
  const format::Id128 volume_id_;
  const format::Id128 file_id_;
  crypto::Aes256Gcm gcm_;
  BackingFile* const backing_;
  Bytes ct_;
  Bytes pt_;
  size_t have_ = 0;  // bytes of the current data page in ct_
};

std::string BlocksText(uint64_t first, uint64_t last) {
  if (first == last) return "block " + std::to_string(first);
  return "blocks " + std::to_string(first) + ".." + std::to_string(last);
}

Result<ContentReport> Checker::Run(bool repair) {
  ContentReport rep;
  KMSFS_ASSIGN_OR_RETURN(const uint64_t backing_size, backing_->Size());

  // 1. Geometry: the backing size must be one layout v1 can produce.
  uint64_t size = 0;
  std::optional<uint64_t> geometry_cut;  // a backing size to cut back to first
  auto sized = format::PlaintextSizeForBackingSize(backing_size);
  if (sized.ok()) {
    size = *sized;
  } else if (backing_size < format::kMinBackingSize) {
    ContentIssue issue;
    issue.problem = "backing file ends at " + std::to_string(backing_size) +
                    " bytes, inside block 0's metadata page: the contents are lost";
    if (repair) {
      KMSFS_RETURN_IF_ERROR(backing_->Truncate(format::kHeaderPageSize));
      std::memset(pt_.data(), 0, kBlock);
      KMSFS_RETURN_IF_ERROR(Seal(0, format::kEntryFinal, 0));
      KMSFS_RETURN_IF_ERROR(ZeroEntries(1, kPerGroup - 1));
      KMSFS_RETURN_IF_ERROR(backing_->Sync(false));
      issue.action = "reset to an empty file";
    }
    rep.issues.push_back(std::move(issue));
    rep.blocks_checked = 1;
    return rep;
  } else {
    const uint64_t groups = (backing_size - format::kHeaderPageSize) / format::kGroupSize;
    ContentIssue issue;
    if (groups == 0 || groups > format::kMaxBlocks / kPerGroup) {
      issue.problem = "backing size " + std::to_string(backing_size) + " is impossible";
      issue.repairable = false;
      if (repair) issue.action = "not repaired";
      rep.issues.push_back(std::move(issue));
      return rep;
    }
    size = groups * kGroupPlain;
    geometry_cut = format::kHeaderPageSize + groups * format::kGroupSize;
    issue.problem = "backing file ends at " + std::to_string(backing_size) +
                    " bytes, inside a metadata page with no data after it: the end of the file "
                    "is lost";
    if (repair) {
      issue.action = "cut back to the last complete group: " + std::to_string(size) +
                     " bytes (its last block is then checked as the end of the file)";
    }
    rep.issues.push_back(std::move(issue));
  }
  uint64_t n = format::BlockCount(size);

  // 2. Classify every block and the entries after the last one. Nothing is written here.
  std::vector<Bad> bad;
  std::vector<std::pair<uint64_t, uint32_t>> early_finals;  // authentic FINAL before the end
  bool last_ok_final = false;
  bool last_ok_not_final = false;
  // The first non-empty entry after the last block (plain ints: GCC 12 misreads an optional).
  bool has_stray = false;
  uint64_t stray_first = 0;
  Bytes page(format::kMetaPageSize);
  for (uint64_t g = 0; g <= (n - 1) / kPerGroup; ++g) {
    const uint64_t b0 = g * kPerGroup;
    const uint64_t b1 = std::min(n - 1, b0 + kPerGroup - 1);
    const uint64_t e1 = b1 == n - 1 ? GroupEnd(b1) : b1;
    const size_t bytes = (e1 - b0 + 1) * format::kMetaEntrySize;
    std::fill(page.begin(), page.end(), 0);
    KMSFS_ASSIGN_OR_RETURN(
        size_t got, backing_->PRead(std::span<uint8_t>(page.data(), bytes), EntryOffset(b0)));
    (void)got;  // a short read leaves zeros: missing entries
    for (uint64_t i = b0; i <= e1; ++i) {
      const ByteSpan raw(page.data() + (i - b0) * format::kMetaEntrySize, format::kMetaEntrySize);
      auto e = format::ParseMetaEntry(raw);
      if (i > b1) {
        if ((!e.ok() || !e->IsEmpty()) && !has_stray) {
          has_stray = true;
          stray_first = i;
        }
        continue;
      }
      ++rep.blocks_checked;
      if (!e.ok()) {
        bad.push_back({i, "metadata entry is malformed"});
        continue;
      }
      if (e->IsEmpty()) {
        bad.push_back({i, "metadata entry is missing (all zero)"});
        continue;
      }
      const bool is_last = i == n - 1;
      const uint32_t len = format::BlockPlaintextLen(size, i);
      KMSFS_ASSIGN_OR_RETURN(bool ok, Auth(i, *e, len));
      if (ok) {
        if (e->IsFinal() == is_last) {
          if (is_last) last_ok_final = true;
        } else if (e->IsFinal()) {
          early_finals.emplace_back(i, len);
          bad.push_back({i, "marked FINAL before the end of the file"});
        } else {
          last_ok_not_final = true;  // cut at a block boundary: decided below
        }
        continue;
      }
      if (e->IsFinal() && !is_last) {
        // The authentic end of a file that was extended may have been a partial block: try
        // every shorter length (the ciphertext is a prefix of the page).
        for (uint32_t l = len; l-- > (i == 0 ? 0u : 1u);) {
          KMSFS_ASSIGN_OR_RETURN(bool short_ok, Auth(i, *e, l, /*reread=*/false));
          if (short_ok) {
            early_finals.emplace_back(i, l);
            break;
          }
        }
      }
      bad.push_back({i, "does not authenticate"});
    }
  }

  // 3. Decide.
  uint64_t final_block = n - 1;
  std::optional<uint64_t> extension_cut;  // new plaintext size
  if (!last_ok_final && !early_finals.empty()) {
    const auto [k, l] = early_finals.back();
    extension_cut = k * kBlock + l;
    ContentIssue issue;
    issue.first_block = k;
    issue.last_block = k;
    issue.problem = "the file was extended past its authentic end: block " + std::to_string(k) +
                    " is FINAL with " + std::to_string(l) + " bytes, so its size is " +
                    std::to_string(*extension_cut) + ", not " + std::to_string(size);
    if (repair) {
      issue.action = "cut back to " + std::to_string(*extension_cut) + " bytes (" +
                     std::to_string(size - *extension_cut) + " bytes after the end discarded)";
    }
    rep.issues.push_back(std::move(issue));
    std::erase_if(bad, [k = k](const Bad& b) { return b.block >= k; });
    final_block = k;
    n = k + 1;
    size = *extension_cut;
    has_stray = false;  // entries after k are rewritten as empty by the cut
    last_ok_not_final = false;
  }

  // No block authenticates under this header's key: header and contents do not belong together.
  if (n >= 2 && bad.size() == n && early_finals.empty() && !last_ok_not_final) {
    ContentIssue issue;
    issue.first_block = 0;
    issue.last_block = n - 1;
    issue.problem =
        "no block authenticates under this file's key: the header does not belong to these "
        "contents (headers swapped or contents replaced)";
    rep.issues.push_back(std::move(issue));
    for (ContentIssue& i : rep.issues) {
      i.repairable = false;
      i.action = repair ? "not repaired: the file is left as it is" : "";
    }
    return rep;
  }

  if (last_ok_not_final) {
    ContentIssue issue;
    issue.first_block = final_block;
    issue.last_block = final_block;
    issue.problem =
        "the last block is not marked FINAL: the file was cut at a block boundary "
        "and its original end is lost";
    if (repair) {
      issue.action = "block " + std::to_string(final_block) + " marked FINAL; the size stays " +
                     std::to_string(size) + " bytes";
      // The entries of the cut-off blocks usually survive in the last metadata page: they are
      // the evidence of the cut, not a problem of their own.
      if (has_stray) issue.action += "; the cut-off blocks' entries cleared";
    }
    rep.issues.push_back(std::move(issue));
  }
  for (size_t a = 0; a < bad.size();) {
    size_t b = a;
    while (b + 1 < bad.size() && bad[b + 1].block == bad[b].block + 1 &&
           std::strcmp(bad[b + 1].why, bad[a].why) == 0) {
      ++b;
    }
    ContentIssue issue;
    issue.first_block = bad[a].block;
    issue.last_block = bad[b].block;
    issue.problem = BlocksText(bad[a].block, bad[b].block) + ": " + bad[a].why;
    if (repair) issue.action = "re-sealed as zeros";
    rep.issues.push_back(std::move(issue));
    a = b + 1;
  }
  if (has_stray && !last_ok_not_final) {
    ContentIssue issue;
    issue.first_block = stray_first;
    issue.problem = "metadata entries after the final block are not empty";
    if (repair) issue.action = "cleared";
    rep.issues.push_back(std::move(issue));
  }
  rep.plaintext_size = size;
  if (!repair || rep.issues.empty()) return rep;

  // 4. Repair, in an order where every step leaves a file the next step can work on.
  if (geometry_cut) KMSFS_RETURN_IF_ERROR(backing_->Truncate(*geometry_cut));
  if (extension_cut) {
    KMSFS_RETURN_IF_ERROR(ZeroEntries(final_block + 1, GroupEnd(final_block)));
    KMSFS_ASSIGN_OR_RETURN(uint64_t cut, format::BackingSizeForPlaintextSize(*extension_cut));
    KMSFS_RETURN_IF_ERROR(backing_->Truncate(cut));
  }
  for (const Bad& b : bad) {
    std::memset(pt_.data(), 0, kBlock);
    const uint8_t flags = b.block == final_block ? format::kEntryFinal : 0;
    KMSFS_RETURN_IF_ERROR(Seal(b.block, flags, format::BlockPlaintextLen(size, b.block)));
  }
  if (last_ok_not_final) {
    // Re-read the authentic plaintext and seal it again, now as the end of the file.
    Bytes raw(format::kMetaEntrySize);
    KMSFS_ASSIGN_OR_RETURN(size_t got, backing_->PRead(raw, EntryOffset(final_block)));
    if (got != raw.size()) return Error(Code::kIo, "metadata entry vanished during repair");
    KMSFS_ASSIGN_OR_RETURN(MetaEntry e, format::ParseMetaEntry(raw));
    const uint32_t len = format::BlockPlaintextLen(size, final_block);
    KMSFS_ASSIGN_OR_RETURN(bool ok, Auth(final_block, e, len));
    if (!ok) return Error(Code::kIo, "block changed during repair");
    KMSFS_RETURN_IF_ERROR(
        Seal(final_block, format::kEntryFinal | (e.flags & format::kEntryHole), len));
  }
  if (has_stray) KMSFS_RETURN_IF_ERROR(ZeroEntries(stray_first, GroupEnd(stray_first)));
  KMSFS_RETURN_IF_ERROR(backing_->Sync(false));
  return rep;
}

}  // namespace

Result<ContentReport> CheckContent(const format::Id128& volume_id, const format::Id128& file_id,
                                   const crypto::SecretBytes& dek, BackingFile* backing,
                                   bool repair) {
  KMSFS_CHECK(backing != nullptr);
  KMSFS_ASSIGN_OR_RETURN(crypto::Aes256Gcm gcm, crypto::Aes256Gcm::Create(dek.span()));
  Checker checker(volume_id, file_id, std::move(gcm), backing);
  return checker.Run(repair);
}

}  // namespace kmsfs::fs::fsck
