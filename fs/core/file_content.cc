// FileContent over block layout v1 (docs/format.md §7).
//
// Shape of every operation: (1) derive the plaintext size from the backing size; (2) read and
// authenticate what must survive (metadata entries, and for writes the few blocks whose old bytes
// are merged); (3) seal the new blocks into a per-thread batch buffer; (4) per batch, one pwrite
// per contiguous run of data pages, then one pwrite per range of metadata entries. A 1 MiB write
// is one batch: at most 3 data runs and 3 entry ranges, whatever the alignment.
#include "fs/core/file_content.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/base/check.h"
#include "common/crypto/aead.h"
#include "common/crypto/random.h"
#include "common/format/block_layout.h"
#include "common/log/log.h"

namespace kmsfs::fs {
namespace {

using format::MetaEntry;

constexpr uint64_t kBlock = format::kBlockSize;
constexpr uint64_t kPerGroup = format::kBlocksPerGroup;
constexpr size_t kEntryLen = format::kMetaEntrySize;
constexpr size_t kMetaPage = format::kMetaPageSize;
constexpr size_t kNonceLen = crypto::kGcmNonceLen;
// Data blocks sealed before a flush. FUSE's largest write (1 MiB) spans at most 257 blocks when
// unaligned, and an append also re-seals the old final block: such a write is one batch.
constexpr size_t kBatchBlocks = 258;
// Metadata ranges (at most one page each) staged before a flush. Bounds a batch of holes: a
// 5 GiB sparse extension is 640 batches of 16 metadata pages.
constexpr size_t kBatchGroups = 16;
// Blocks whose old contents a write merges: first and last written block, old final block.
constexpr size_t kMaxOldBlocks = 3;
// GCM contexts kept per file for concurrent readers; more are cloned on demand and dropped.
constexpr size_t kIdleContexts = 8;

uint64_t GroupOf(uint64_t block) { return block / kPerGroup; }
uint64_t EntryOffset(uint64_t block) {
  return format::MetaOffset(block) + format::EntryOffsetInMeta(block);
}
// The last block of `block`'s group.
uint64_t GroupEnd(uint64_t block) { return GroupOf(block) * kPerGroup + kPerGroup - 1; }

bool AllZero(ByteSpan b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t c) { return c == 0; });
}

const std::array<uint8_t, kMetaPage>& ZeroPage() {
  static const std::array<uint8_t, kMetaPage> zeros{};
  return zeros;
}

// A block as it was before a write: authenticated, decrypted, and kept (ciphertext + raw entry)
// so that a failed write can put it back.
struct OldBlock {
  uint64_t block = 0;
  uint32_t len = 0;  // plaintext length at the old size
  MetaEntry entry;
  std::array<uint8_t, kEntryLen> raw{};
  Bytes cipher;  // kBlock bytes, `len` used
  Bytes plain;   // kBlock bytes, `len` used
  bool HasData() const { return !entry.IsHole() && len > 0; }
};

// A contiguous byte range staged for one pwrite: `len` bytes at `pos` of a scratch buffer go to
// `offset` of the backing file; `next_block` is the block that would extend it.
struct Range {
  uint64_t offset;
  size_t pos;
  size_t len;
  uint64_t next_block;
};

// Per-thread scratch memory, reused by every FileContent the thread touches (a method never
// calls into another FileContent, so one set per thread suffices). It holds file plaintext and
// ciphertext, never key material; like the kernel's page cache it is not wiped.
struct Scratch {
  Bytes data;                      // staged ciphertext: kBatchBlocks pages (allocated on first write)
  Bytes meta;                      // staged or read metadata entries: kBatchGroups pages
  Bytes nonces;                    // pre-drawn nonces of the running operation
  size_t nonce_pos = 0;
  size_t nonce_len = 0;
  std::vector<MetaEntry> entries;  // parsed entries of one read batch
  std::vector<Range> data_runs;
  std::vector<Range> meta_ranges;
  Bytes block_cipher;              // one block, for partially read blocks
  Bytes block_plain;               // one block, for partial reads and merged writes
  std::array<OldBlock, kMaxOldBlocks> old;
  size_t old_count = 0;
  Bytes tail;                      // a metadata page tail saved for rollback (Truncate)

  Scratch() {
    meta.resize(kBatchGroups * kMetaPage);
    nonces.resize(kBatchBlocks * kNonceLen);
    entries.reserve(kBatchGroups * kPerGroup);
    data_runs.reserve(kBatchBlocks);
    meta_ranges.reserve(kBatchGroups);
    block_cipher.resize(kBlock);
    block_plain.resize(kBlock);
    tail.resize(kMetaPage);
    for (OldBlock& o : old) {
      o.cipher.resize(kBlock);
      o.plain.resize(kBlock);
    }
  }
  OldBlock* FindOld(uint64_t block) {
    for (size_t i = 0; i < old_count; ++i) {
      if (old[i].block == block) return &old[i];
    }
    return nullptr;
  }
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

Error Efbig() {
  return Error(Code::kInvalidArgument, "file size beyond the format's maximum", EFBIG);
}

}  // namespace

struct FileContent::Impl {
  struct Sizes {
    uint64_t plain;
    uint64_t backing;
  };

  Impl(const format::Id128& volume, const format::Id128& file, BackingFile* b,
       crypto::Aes256Gcm proto)
      : volume_id(volume),
        file_id(file),
        backing(b),
        file_hex(HexEncode(file)),
        prototype(std::move(proto)) {}

  const format::Id128 volume_id;
  const format::Id128 file_id;
  BackingFile* const backing;
  const std::string file_hex;  // for messages: ids may be logged, contents never

  // Shared: Read, Size. Exclusive: Write, Truncate, InitializeEmpty. Lock order: mu before
  // pool_mu (pool_mu is a leaf).
  std::shared_mutex mu;
  std::mutex pool_mu;
  crypto::Aes256Gcm prototype;                           // guarded by pool_mu; only ever cloned
  std::vector<std::unique_ptr<crypto::Aes256Gcm>> idle;  // guarded by pool_mu

  Error Corrupt(uint64_t block, std::string_view what) const {
    std::string msg = "file " + file_hex + " block " + std::to_string(block) + ": ";
    msg += what;
    return Error(Code::kCorrupt, std::move(msg));
  }
  // A failed tag check becomes kCorrupt naming the block; other errors (kInternal) pass as is.
  Status AuthResult(uint64_t block, Status st) const {
    if (st.ok() || st.code() != Code::kCorrupt) return st;
    return Corrupt(block, "authentication failed");
  }
  std::array<uint8_t, format::kBlockAadLen> Aad(uint64_t block, uint8_t flags,
                                                uint32_t len) const {
    return format::BlockAad(volume_id, file_id, block, flags, len);
  }

  // The backing file's size as last seen, or kUnknownSize. Only this object changes the
  // backing file while it exists (the mount is the only writer of the backing tree, and
  // truncate(2) by path through another state calls ForgetBackingSize), so a 4 KiB read or
  // overwrite needs no fstat. Filled under mu in either mode (readers may race to store the
  // same value); dropped under mu exclusive by every change of the size and every failure.
  static constexpr uint64_t kUnknownSize = ~uint64_t{0};
  std::atomic<uint64_t> known_backing_size{kUnknownSize};

  // REQUIRES: mu held (either mode).
  Result<Sizes> SizesLocked() {
    uint64_t backing_size = known_backing_size.load(std::memory_order_acquire);
    const bool cached = backing_size != kUnknownSize;
    if (!cached) {
      KMSFS_ASSIGN_OR_RETURN(backing_size, backing->Size());
    }
    auto plain = format::PlaintextSizeForBackingSize(backing_size);
    if (!plain.ok()) {
      // Not remembered: the next request looks at the file again (an impossible size written
      // from outside stays an error only while it is there).
      return Error(Code::kCorrupt, "file " + file_hex + ": " + plain.error().message());
    }
    if (!cached) known_backing_size.store(backing_size, std::memory_order_release);
    return Sizes{*plain, backing_size};
  }

  Result<std::unique_ptr<crypto::Aes256Gcm>> AcquireGcm() {
    std::lock_guard<std::mutex> lock(pool_mu);
    if (!idle.empty()) {
      auto gcm = std::move(idle.back());
      idle.pop_back();
      return gcm;
    }
    KMSFS_ASSIGN_OR_RETURN(crypto::Aes256Gcm clone, prototype.Clone());
    return std::make_unique<crypto::Aes256Gcm>(std::move(clone));
  }
  void ReleaseGcm(std::unique_ptr<crypto::Aes256Gcm> gcm) {
    std::lock_guard<std::mutex> lock(pool_mu);
    if (idle.size() < kIdleContexts) idle.push_back(std::move(gcm));
  }

  // Verifies an entry without stored data (HOLE, or the empty file's block 0): its tag covers
  // the AAD and an empty ciphertext.
  Status OpenEmpty(crypto::Aes256Gcm& gcm, uint64_t block, const MetaEntry& e, uint32_t len) {
    auto aad = Aad(block, e.flags, len);
    return AuthResult(block, gcm.Open(e.nonce, aad, {}, e.tag, {}));
  }
  Status OpenData(crypto::Aes256Gcm& gcm, uint64_t block, const MetaEntry& e, ByteSpan cipher,
                  std::span<uint8_t> plain) {
    auto aad = Aad(block, e.flags, static_cast<uint32_t>(cipher.size()));
    return AuthResult(block, gcm.Open(e.nonce, aad, cipher, e.tag, plain));
  }

  class GcmLease;
  class BatchWriter;

  Status ReadLocked(std::span<uint8_t> out, uint64_t offset, uint64_t size);
  Status ReadBatch(crypto::Aes256Gcm& gcm, Scratch& s, std::span<uint8_t> out, uint64_t offset,
                   uint64_t size, uint64_t first, uint64_t last);
  Status LoadOld(crypto::Aes256Gcm& gcm, Scratch& s, uint64_t block, uint64_t old_size);
  Status WriteLocked(ByteSpan data, uint64_t offset);
  Status ExtendLocked(const Sizes& old, uint64_t size);
  Status ShrinkLocked(const Sizes& old, uint64_t size);
  // Best effort: puts back the loaded old blocks, then (if given) the saved metadata tail at
  // `tail_offset`, zeroes the entries after `zero_after` in its page, and cuts the file to
  // `truncate_to`. Logs what it could not undo.
  void Rollback(Scratch& s, std::optional<uint64_t> zero_after, std::optional<uint64_t> tail_offset,
                size_t tail_len, std::optional<uint64_t> truncate_to);
};

// Returns a pooled GCM context to its file on scope exit.
class FileContent::Impl::GcmLease {
 public:
  GcmLease(Impl* impl, std::unique_ptr<crypto::Aes256Gcm> gcm)
      : impl_(impl), gcm_(std::move(gcm)) {}
  ~GcmLease() { impl_->ReleaseGcm(std::move(gcm_)); }
  GcmLease(const GcmLease&) = delete;
  GcmLease& operator=(const GcmLease&) = delete;
  crypto::Aes256Gcm& get() { return *gcm_; }

 private:
  Impl* impl_;
  std::unique_ptr<crypto::Aes256Gcm> gcm_;
};

namespace {

// Draws the nonces of one operation in bulk (one RandomBytes call per batch rather than per
// block). Unused nonces are dropped when the operation ends, so none is ever carried into
// another operation, another file, or a forked child.
class NonceSource {
 public:
  NonceSource(Scratch* s, uint64_t expected) : s_(s), remaining_(expected) {
    s_->nonce_pos = s_->nonce_len = 0;
  }
  ~NonceSource() { s_->nonce_pos = s_->nonce_len = 0; }
  NonceSource(const NonceSource&) = delete;
  NonceSource& operator=(const NonceSource&) = delete;

  std::span<const uint8_t, kNonceLen> Next() {
    for (;;) {
      if (s_->nonce_pos == s_->nonce_len) Refill();
      std::span<const uint8_t, kNonceLen> n(s_->nonces.data() + s_->nonce_pos, kNonceLen);
      s_->nonce_pos += kNonceLen;
      // The all-zero nonce marks an empty entry (format.md §7.3): redraw (a 2^-96 event).
      if (!AllZero(n)) return n;
    }
  }

 private:
  void Refill() {
    const uint64_t count = std::clamp<uint64_t>(remaining_, 1, kBatchBlocks);
    remaining_ -= std::min(remaining_, count);
    s_->nonce_len = count * kNonceLen;
    s_->nonce_pos = 0;
    crypto::RandomBytes(std::span<uint8_t>(s_->nonces.data(), s_->nonce_len));
  }
  Scratch* s_;
  uint64_t remaining_;
};

}  // namespace

// Seals blocks into the thread's scratch buffers and writes them out in batches: data runs
// first, then metadata ranges (format.md §7.6). Blocks must be added in ascending order.
class FileContent::Impl::BatchWriter {
 public:
  BatchWriter(Impl* impl, crypto::Aes256Gcm* gcm, Scratch* s, uint64_t blocks)
      : impl_(impl), gcm_(gcm), s_(s), nonces_(s, blocks) {
    if (s_->data.size() < kBatchBlocks * kBlock) s_->data.resize(kBatchBlocks * kBlock);
    s_->data_runs.clear();
    s_->meta_ranges.clear();
  }

  // Seals `block` with `flags` and plaintext length `len`. `plain` holds the `len` bytes of a
  // data block; it is empty for a HOLE and for the empty file's block 0.
  Status Add(uint64_t block, uint8_t flags, uint32_t len, ByteSpan plain) {
    const bool has_data = (flags & format::kEntryHole) == 0 && len > 0;
    KMSFS_CHECK(plain.size() == (has_data ? len : 0));
    if ((has_data && data_used_ + len > s_->data.size()) ||
        (NeedsNewMetaRange(block) && s_->meta_ranges.size() == kBatchGroups)) {
      KMSFS_RETURN_IF_ERROR(Flush());
    }
    MetaEntry e;
    auto nonce = nonces_.Next();
    std::copy(nonce.begin(), nonce.end(), e.nonce.begin());
    e.flags = flags;
    auto aad = impl_->Aad(block, flags, len);
    if (has_data) {
      std::span<uint8_t> ct(s_->data.data() + data_used_, len);
      KMSFS_RETURN_IF_ERROR(gcm_->Seal(e.nonce, aad, plain, ct, e.tag));
      std::vector<Range>& runs = s_->data_runs;
      if (!runs.empty() && runs.back().next_block == block && block % kPerGroup != 0) {
        KMSFS_CHECK(runs.back().len % kBlock == 0);  // only the file's last block is short
        runs.back().len += len;
        runs.back().next_block = block + 1;
      } else {
        runs.push_back(Range{format::DataOffset(block), data_used_, len, block + 1});
      }
      data_used_ += len;
    } else {
      KMSFS_RETURN_IF_ERROR(gcm_->Seal(e.nonce, aad, {}, {}, e.tag));
    }
    KMSFS_ASSIGN_OR_RETURN(auto raw, format::SerializeMetaEntry(e));
    return PutEntry(block, raw);
  }

  // Stages an all-zero entry: "no block here", after the FINAL block.
  Status AddEmpty(uint64_t block) {
    if (NeedsNewMetaRange(block) && s_->meta_ranges.size() == kBatchGroups) {
      KMSFS_RETURN_IF_ERROR(Flush());
    }
    return PutEntry(block, std::array<uint8_t, kEntryLen>{});
  }

  Status Flush() {
    for (const Range& r : s_->data_runs) {
      wrote_ = true;
      KMSFS_RETURN_IF_ERROR(impl_->backing->PWrite(ByteSpan(s_->data.data() + r.pos, r.len),
                                                   r.offset));
    }
    for (const Range& r : s_->meta_ranges) {
      wrote_ = true;
      KMSFS_RETURN_IF_ERROR(impl_->backing->PWrite(ByteSpan(s_->meta.data() + r.pos, r.len),
                                                   r.offset));
    }
    s_->data_runs.clear();
    s_->meta_ranges.clear();
    data_used_ = meta_used_ = 0;
    return Status::Ok();
  }

  // Whether any write was issued (then a failure needs a rollback).
  bool wrote() const { return wrote_; }

 private:
  bool NeedsNewMetaRange(uint64_t block) const {
    const std::vector<Range>& m = s_->meta_ranges;
    return m.empty() || m.back().next_block != block || block % kPerGroup == 0;
  }
  Status PutEntry(uint64_t block, const std::array<uint8_t, kEntryLen>& raw) {
    if (NeedsNewMetaRange(block)) {
      KMSFS_CHECK(s_->meta_ranges.size() < kBatchGroups);
      s_->meta_ranges.push_back(Range{EntryOffset(block), meta_used_, 0, block});
    }
    KMSFS_CHECK(meta_used_ + kEntryLen <= s_->meta.size());
    std::memcpy(s_->meta.data() + meta_used_, raw.data(), kEntryLen);
    meta_used_ += kEntryLen;
    s_->meta_ranges.back().len += kEntryLen;
    s_->meta_ranges.back().next_block = block + 1;
    return Status::Ok();
  }

  Impl* impl_;
  crypto::Aes256Gcm* gcm_;
  Scratch* s_;
  NonceSource nonces_;
  size_t data_used_ = 0;
  size_t meta_used_ = 0;
  bool wrote_ = false;
};

// ---------------------------------------------------------------------------------------------
// Reads

Status FileContent::Impl::ReadLocked(std::span<uint8_t> out, uint64_t offset, uint64_t size) {
  KMSFS_ASSIGN_OR_RETURN(auto gcm_ptr, AcquireGcm());
  GcmLease gcm(this, std::move(gcm_ptr));
  Scratch& s = ThreadScratch();
  const uint64_t end = offset + out.size();
  const uint64_t last = (end - 1) / kBlock;
  for (uint64_t first = offset / kBlock; first <= last;) {
    // A batch spans at most kBatchGroups metadata pages.
    const uint64_t batch_last = std::min(last, GroupEnd(first) + (kBatchGroups - 1) * kPerGroup);
    KMSFS_RETURN_IF_ERROR(ReadBatch(gcm.get(), s, out, offset, size, first, batch_last));
    first = batch_last + 1;
  }
  return Status::Ok();
}

Status FileContent::Impl::ReadBatch(crypto::Aes256Gcm& gcm, Scratch& s, std::span<uint8_t> out,
                                    uint64_t offset, uint64_t size, uint64_t first,
                                    uint64_t last) {
  const uint64_t n = format::BlockCount(size);
  const uint64_t end = offset + out.size();

  // 1. Metadata: one pread per group, covering the touched entries and, in the final block's
  //    page, every entry after it (they must be empty).
  s.entries.clear();
  size_t meta_used = 0;
  for (uint64_t g = GroupOf(first); g <= GroupOf(last); ++g) {
    const uint64_t b0 = std::max(first, g * kPerGroup);
    const uint64_t b1 = std::min(last, g * kPerGroup + kPerGroup - 1);
    const uint64_t e1 = b1 == n - 1 ? GroupEnd(b1) : b1;
    const size_t bytes = (e1 - b0 + 1) * kEntryLen;
    std::span<uint8_t> dst(s.meta.data() + meta_used, bytes);
    KMSFS_ASSIGN_OR_RETURN(size_t got, backing->PRead(dst, EntryOffset(b0)));
    if (got != bytes) return Corrupt(b0, "metadata page cut short");
    for (uint64_t b = b0; b <= e1; ++b) {
      auto e = format::ParseMetaEntry(ByteSpan(dst.data() + (b - b0) * kEntryLen, kEntryLen));
      if (!e.ok()) return Corrupt(b, e.error().message());
      Status st = format::CheckEntryForBlock(*e, b, n);
      if (!st.ok()) return Corrupt(b, st.error().message());
      if (b <= b1) s.entries.push_back(*e);
    }
    meta_used += bytes;
  }

  // 2. Data. Blocks the request covers completely are read and decrypted in place in `out`,
  //    in one pread per run of consecutive data pages; partial blocks go through scratch.
  auto covered = [&](uint64_t b) {
    const uint64_t start = b * kBlock;
    return start >= offset && start + format::BlockPlaintextLen(size, b) <= end;
  };
  for (uint64_t b = first; b <= last;) {
    const MetaEntry& e = s.entries[b - first];
    const uint64_t start = b * kBlock;
    const uint32_t len = format::BlockPlaintextLen(size, b);
    const uint64_t lo = std::max(start, offset);
    const uint64_t hi = std::min(start + len, end);
    if (e.IsHole()) {
      KMSFS_RETURN_IF_ERROR(OpenEmpty(gcm, b, e, len));
      std::memset(out.data() + (lo - offset), 0, hi - lo);
      ++b;
      continue;
    }
    if (!covered(b)) {
      std::span<uint8_t> ct(s.block_cipher.data(), len);
      KMSFS_ASSIGN_OR_RETURN(size_t got, backing->PRead(ct, format::DataOffset(b)));
      if (got != len) return Corrupt(b, "data page cut short");
      std::span<uint8_t> pt(s.block_plain.data(), len);
      KMSFS_RETURN_IF_ERROR(OpenData(gcm, b, e, ct, pt));
      std::memcpy(out.data() + (lo - offset), pt.data() + (lo - start), hi - lo);
      ++b;
      continue;
    }
    uint64_t run_last = b;
    while (run_last < last && GroupOf(run_last + 1) == GroupOf(b) &&
           !s.entries[run_last + 1 - first].IsHole() && covered(run_last + 1)) {
      ++run_last;
    }
    const size_t run_bytes =
        (run_last - b) * kBlock + format::BlockPlaintextLen(size, run_last);
    std::span<uint8_t> dst = out.subspan(start - offset, run_bytes);
    KMSFS_ASSIGN_OR_RETURN(size_t got, backing->PRead(dst, format::DataOffset(b)));
    if (got != run_bytes) return Corrupt(b, "data page cut short");
    for (uint64_t r = b; r <= run_last; ++r) {
      std::span<uint8_t> blk =
          dst.subspan((r - b) * kBlock, format::BlockPlaintextLen(size, r));
      KMSFS_RETURN_IF_ERROR(OpenData(gcm, r, s.entries[r - first], blk, blk));
    }
    b = run_last + 1;
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Writes

Status FileContent::Impl::LoadOld(crypto::Aes256Gcm& gcm, Scratch& s, uint64_t block,
                                  uint64_t old_size) {
  if (s.FindOld(block) != nullptr) return Status::Ok();
  KMSFS_CHECK(s.old_count < kMaxOldBlocks);
  OldBlock& o = s.old[s.old_count];
  o.block = block;
  o.len = format::BlockPlaintextLen(old_size, block);
  KMSFS_ASSIGN_OR_RETURN(size_t got, backing->PRead(o.raw, EntryOffset(block)));
  if (got != kEntryLen) return Corrupt(block, "metadata entry cut short");
  auto e = format::ParseMetaEntry(o.raw);
  if (!e.ok()) return Corrupt(block, e.error().message());
  Status st = format::CheckEntryForBlock(*e, block, format::BlockCount(old_size));
  if (!st.ok()) return Corrupt(block, st.error().message());
  o.entry = *e;
  if (!o.HasData()) {
    KMSFS_RETURN_IF_ERROR(OpenEmpty(gcm, block, o.entry, o.len));
    std::memset(o.plain.data(), 0, o.len);
  } else {
    std::span<uint8_t> ct(o.cipher.data(), o.len);
    KMSFS_ASSIGN_OR_RETURN(got, backing->PRead(ct, format::DataOffset(block)));
    if (got != o.len) return Corrupt(block, "data page cut short");
    KMSFS_RETURN_IF_ERROR(OpenData(gcm, block, o.entry, ct, {o.plain.data(), o.len}));
  }
  ++s.old_count;
  return Status::Ok();
}

void FileContent::Impl::Rollback(Scratch& s, std::optional<uint64_t> zero_after,
                                 std::optional<uint64_t> tail_offset, size_t tail_len,
                                 std::optional<uint64_t> truncate_to) {
  Status first_failure;
  auto note = [&](Status st) {
    if (!st.ok() && first_failure.ok()) first_failure = st;
  };
  for (size_t i = 0; i < s.old_count; ++i) {
    const OldBlock& o = s.old[i];
    if (o.HasData()) {
      note(backing->PWrite(ByteSpan(o.cipher.data(), o.len), format::DataOffset(o.block)));
    }
    note(backing->PWrite(o.raw, EntryOffset(o.block)));
  }
  if (tail_offset.has_value()) note(backing->PWrite(ByteSpan(s.tail.data(), tail_len), *tail_offset));
  if (zero_after.has_value() && *zero_after % kPerGroup != kPerGroup - 1) {
    const uint64_t b = *zero_after + 1;
    const size_t bytes = (GroupEnd(b) - b + 1) * kEntryLen;
    note(backing->PWrite(ByteSpan(ZeroPage().data(), bytes), EntryOffset(b)));
  }
  if (truncate_to.has_value()) note(backing->Truncate(*truncate_to));
  if (!first_failure.ok()) {
    log::Get("fs.core")->warn("file {}: undoing a failed write is incomplete ({}); blocks it "
                              "touched may read as EIO",
                              file_hex, first_failure.ToString());
  }
}

Status FileContent::Impl::WriteLocked(ByteSpan data, uint64_t offset) {
  KMSFS_ASSIGN_OR_RETURN(Sizes old, SizesLocked());
  const uint64_t end = offset + data.size();
  const uint64_t new_size = std::max(old.plain, end);
  const uint64_t old_n = format::BlockCount(old.plain);
  const uint64_t new_n = format::BlockCount(new_size);
  const uint64_t old_last = old_n - 1;
  const uint64_t first_w = offset / kBlock;
  const uint64_t last_w = (end - 1) / kBlock;
  const bool extending = new_size > old.plain;

  KMSFS_ASSIGN_OR_RETURN(auto gcm_ptr, AcquireGcm());
  GcmLease gcm(this, std::move(gcm_ptr));
  Scratch& s = ThreadScratch();
  s.old_count = 0;

  // Blocks whose old bytes survive the write are merged. The old final block is always loaded
  // when extending: it loses FINAL (re-sealed with a new nonce), and a failed extension puts it
  // back exactly.
  auto partly_kept = [&](uint64_t b) {
    if (b >= old_n) return false;
    const uint64_t start = b * kBlock;
    return !(offset <= start && end >= start + format::BlockPlaintextLen(old.plain, b));
  };
  if (partly_kept(first_w)) KMSFS_RETURN_IF_ERROR(LoadOld(gcm.get(), s, first_w, old.plain));
  if (partly_kept(last_w)) KMSFS_RETURN_IF_ERROR(LoadOld(gcm.get(), s, last_w, old.plain));
  if (extending) KMSFS_RETURN_IF_ERROR(LoadOld(gcm.get(), s, old_last, old.plain));

  // A write far past the end first gives the backing file its new size: the backing filesystem
  // refuses an impossible size (EFBIG) at once, before thousands of hole entries are sealed.
  bool resized = false;
  if (extending && first_w > old_last + kBatchBlocks) {
    KMSFS_ASSIGN_OR_RETURN(uint64_t new_backing, format::BackingSizeForPlaintextSize(new_size));
    KMSFS_RETURN_IF_ERROR(backing->Truncate(new_backing));
    resized = true;
  }

  const uint64_t first_sealed = extending ? std::min(old_last, first_w) : first_w;
  BatchWriter batch(this, &gcm.get(), &s, last_w - first_sealed + 1);
  auto seal_all = [&]() -> Status {
    for (uint64_t b = first_sealed; b <= last_w; ++b) {
      const uint32_t len = format::BlockPlaintextLen(new_size, b);
      const uint8_t final_flag = b == new_n - 1 ? format::kEntryFinal : 0;
      const uint64_t start = b * kBlock;
      const OldBlock* o = s.FindOld(b);
      if (b < first_w) {
        // Between the old end and the write: the old final block, then never-written blocks.
        if (o != nullptr && o->HasData()) {
          std::memcpy(s.block_plain.data(), o->plain.data(), o->len);
          std::memset(s.block_plain.data() + o->len, 0, len - o->len);
          KMSFS_RETURN_IF_ERROR(batch.Add(b, final_flag, len, {s.block_plain.data(), len}));
        } else {
          KMSFS_RETURN_IF_ERROR(batch.Add(b, format::kEntryHole | final_flag, len, {}));
        }
        continue;
      }
      if (offset <= start && end >= start + len) {
        // Written completely: sealed straight from the caller's buffer.
        KMSFS_RETURN_IF_ERROR(batch.Add(b, final_flag, len, data.subspan(start - offset, len)));
        continue;
      }
      // Merged: old bytes (or zeros past the old end), then the written part.
      uint8_t* p = s.block_plain.data();
      const uint32_t kept = o != nullptr ? o->len : 0;
      KMSFS_CHECK(kept <= len);
      if (kept > 0) std::memcpy(p, o->plain.data(), kept);
      std::memset(p + kept, 0, len - kept);
      const uint64_t lo = std::max(start, offset);
      const uint64_t hi = std::min(start + len, end);
      std::memcpy(p + (lo - start), data.data() + (lo - offset), hi - lo);
      KMSFS_RETURN_IF_ERROR(batch.Add(b, final_flag, len, {p, len}));
    }
    return batch.Flush();
  };
  Status st = seal_all();
  // An overwrite inside the file leaves the backing size as it was; anything else may not.
  if (!st.ok() || extending || resized) {
    known_backing_size.store(kUnknownSize, std::memory_order_release);
  }
  if (!st.ok() && (batch.wrote() || resized)) {
    if (extending) {
      Rollback(s, old_last, std::nullopt, 0, old.backing);
    } else {
      Rollback(s, std::nullopt, std::nullopt, 0, std::nullopt);
    }
  }
  return st;
}

Status FileContent::Impl::ExtendLocked(const Sizes& old, uint64_t size) {
  const uint64_t old_last = format::BlockCount(old.plain) - 1;
  const uint64_t new_n = format::BlockCount(size);
  KMSFS_ASSIGN_OR_RETURN(uint64_t new_backing, format::BackingSizeForPlaintextSize(size));
  KMSFS_ASSIGN_OR_RETURN(auto gcm_ptr, AcquireGcm());
  GcmLease gcm(this, std::move(gcm_ptr));
  Scratch& s = ThreadScratch();
  s.old_count = 0;
  KMSFS_RETURN_IF_ERROR(LoadOld(gcm.get(), s, old_last, old.plain));
  const OldBlock& o = s.old[0];
  // Size first: the new final block is a hole, so nothing else would give the backing file its
  // size, and an impossible size (EFBIG from the backing filesystem) fails before any metadata
  // is written.
  KMSFS_RETURN_IF_ERROR(backing->Truncate(new_backing));

  BatchWriter batch(this, &gcm.get(), &s, new_n - old_last);
  auto seal_all = [&]() -> Status {
    for (uint64_t b = old_last; b < new_n; ++b) {
      const uint32_t len = format::BlockPlaintextLen(size, b);
      const uint8_t final_flag = b == new_n - 1 ? format::kEntryFinal : 0;
      if (b == old_last && o.HasData()) {
        std::memcpy(s.block_plain.data(), o.plain.data(), o.len);
        std::memset(s.block_plain.data() + o.len, 0, len - o.len);
        KMSFS_RETURN_IF_ERROR(batch.Add(b, final_flag, len, {s.block_plain.data(), len}));
      } else {
        KMSFS_RETURN_IF_ERROR(batch.Add(b, format::kEntryHole | final_flag, len, {}));
      }
    }
    return batch.Flush();
  };
  Status st = seal_all();
  if (!st.ok()) Rollback(s, old_last, std::nullopt, 0, old.backing);
  return st;
}

Status FileContent::Impl::ShrinkLocked(const Sizes& old, uint64_t size) {
  const uint64_t k = format::BlockCount(size) - 1;  // the new final block
  const uint32_t len = format::BlockPlaintextLen(size, k);
  KMSFS_ASSIGN_OR_RETURN(uint64_t new_backing, format::BackingSizeForPlaintextSize(size));
  KMSFS_ASSIGN_OR_RETURN(auto gcm_ptr, AcquireGcm());
  GcmLease gcm(this, std::move(gcm_ptr));
  Scratch& s = ThreadScratch();
  s.old_count = 0;
  KMSFS_RETURN_IF_ERROR(LoadOld(gcm.get(), s, k, old.plain));
  const OldBlock& o = s.old[0];
  // The tail of k's metadata page (entry k and all after it) is rewritten: saved for rollback.
  const uint64_t tail_offset = EntryOffset(k);
  const size_t tail_len = (GroupEnd(k) - k + 1) * kEntryLen;
  KMSFS_ASSIGN_OR_RETURN(size_t got, backing->PRead({s.tail.data(), tail_len}, tail_offset));
  if (got != tail_len) return Corrupt(k, "metadata page cut short");

  BatchWriter batch(this, &gcm.get(), &s, 1);
  auto seal_all = [&]() -> Status {
    if (len == 0) {
      KMSFS_RETURN_IF_ERROR(batch.Add(k, format::kEntryFinal, 0, {}));  // the empty file
    } else if (!o.HasData()) {
      KMSFS_RETURN_IF_ERROR(batch.Add(k, format::kEntryHole | format::kEntryFinal, len, {}));
    } else {
      KMSFS_RETURN_IF_ERROR(batch.Add(k, format::kEntryFinal, len, {o.plain.data(), len}));
    }
    for (uint64_t b = k + 1; b <= GroupEnd(k); ++b) KMSFS_RETURN_IF_ERROR(batch.AddEmpty(b));
    KMSFS_RETURN_IF_ERROR(batch.Flush());
    return backing->Truncate(new_backing);
  };
  Status st = seal_all();
  if (!st.ok() && batch.wrote()) Rollback(s, std::nullopt, tail_offset, tail_len, std::nullopt);
  return st;
}

// ---------------------------------------------------------------------------------------------
// Public API

FileContent::FileContent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FileContent::~FileContent() = default;

Result<std::unique_ptr<FileContent>> FileContent::Open(const format::Id128& volume_id,
                                                       const format::Id128& file_id,
                                                       const crypto::SecretBytes& dek,
                                                       BackingFile* backing) {
  KMSFS_CHECK(backing != nullptr);
  if (dek.size() != crypto::kGcmKeyLen) {
    return Error(Code::kInvalidArgument, "file content key must be 32 bytes");
  }
  KMSFS_ASSIGN_OR_RETURN(crypto::Aes256Gcm gcm, crypto::Aes256Gcm::Create(dek.span()));
  return std::unique_ptr<FileContent>(
      new FileContent(std::make_unique<Impl>(volume_id, file_id, backing, std::move(gcm))));
}

Status FileContent::InitializeEmpty() {
  std::unique_lock lock(impl_->mu);
  KMSFS_ASSIGN_OR_RETURN(uint64_t backing_size, impl_->backing->Size());
  if (backing_size != format::kHeaderPageSize) {
    return Error(Code::kFailedPrecondition,
                 "file " + impl_->file_hex + ": content initialized twice or header missing");
  }
  KMSFS_ASSIGN_OR_RETURN(auto gcm_ptr, impl_->AcquireGcm());
  Impl::GcmLease gcm(impl_.get(), std::move(gcm_ptr));
  Scratch& s = ThreadScratch();
  Impl::BatchWriter batch(impl_.get(), &gcm.get(), &s, 1);
  impl_->known_backing_size.store(Impl::kUnknownSize, std::memory_order_release);
  KMSFS_RETURN_IF_ERROR(batch.Add(0, format::kEntryFinal, 0, {}));
  for (uint64_t b = 1; b < kPerGroup; ++b) KMSFS_RETURN_IF_ERROR(batch.AddEmpty(b));
  return batch.Flush();  // one full metadata page: the backing file is now 8192 bytes
}

Result<uint64_t> FileContent::Size() {
  std::shared_lock lock(impl_->mu);
  KMSFS_ASSIGN_OR_RETURN(Impl::Sizes sizes, impl_->SizesLocked());
  return sizes.plain;
}

Result<size_t> FileContent::Read(std::span<uint8_t> buf, uint64_t offset) {
  std::shared_lock lock(impl_->mu);
  KMSFS_ASSIGN_OR_RETURN(Impl::Sizes sizes, impl_->SizesLocked());
  if (buf.empty() || offset >= sizes.plain) return size_t{0};
  const uint64_t len = std::min<uint64_t>(buf.size(), sizes.plain - offset);
  std::span<uint8_t> out = buf.first(len);
  Status st = impl_->ReadLocked(out, offset, sizes.plain);
  if (!st.ok()) {
    // Blocks before the failing one were fine, but a failed read hands out nothing.
    std::memset(buf.data(), 0, buf.size());
    return st.error();
  }
  return static_cast<size_t>(len);
}

Status FileContent::Write(ByteSpan data, uint64_t offset) {
  if (offset > format::kMaxPlaintextSize || data.size() > format::kMaxPlaintextSize - offset) {
    return Efbig();
  }
  if (data.empty()) return Status::Ok();
  std::unique_lock lock(impl_->mu);
  return impl_->WriteLocked(data, offset);
}

Status FileContent::Truncate(uint64_t size) {
  if (size > format::kMaxPlaintextSize) return Efbig();
  std::unique_lock lock(impl_->mu);
  KMSFS_ASSIGN_OR_RETURN(Impl::Sizes old, impl_->SizesLocked());
  if (size == old.plain) return Status::Ok();
  impl_->known_backing_size.store(Impl::kUnknownSize, std::memory_order_release);
  if (size > old.plain) return impl_->ExtendLocked(old, size);
  return impl_->ShrinkLocked(old, size);
}

void FileContent::ForgetBackingSize() {
  std::unique_lock lock(impl_->mu);
  impl_->known_backing_size.store(Impl::kUnknownSize, std::memory_order_release);
}

}  // namespace kmsfs::fs
