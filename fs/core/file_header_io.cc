#include "fs/core/file_header_io.h"

#include <algorithm>
#include <cerrno>
#include <utility>
#include <vector>

#include "common/crypto/random.h"
#include "common/format/file_header.h"
#include "common/log/log.h"
#include "fs/core/file_content.h"

namespace kmsfs::fs {
namespace {

constexpr size_t kDekLen = 32;

Result<format::FileHeader> ReadHeader(BackingFile* backing) {
  Bytes page(format::FileHeader::kSize);
  KMSFS_ASSIGN_OR_RETURN(size_t got, backing->PRead(page, 0));
  if (got != page.size()) return Error(Code::kCorrupt, "file header: backing file is truncated");
  return format::ParseFileHeader(page);
}

Result<bool> HeaderHasLink(const format::FileHeader& header, const Volume& volume,
                           const LinkName& link) {
  KMSFS_ASSIGN_OR_RETURN(format::LinkTag tag,
                         volume.LinkTagFor(header.file_id, link.dir_id, link.backing_name));
  return header.HasLink(tag);
}

// The writes of one link change (format.md §6.1): the new set into the inactive slot, durable,
// and only then the superseded set zeroed, so no stale tags stay on disk once the change is
// done, and a crash at any point leaves one valid slot (the new set, or the previous one).
// Zeroing before the fdatasync could reach the disk first and leave no slot at all, which is
// why the fdatasync is there even when the caller asked for no sync.
Status WriteLinkSlots(BackingFile* backing, const format::LinksWrite& w, bool sync,
                      bool* changed_out) {
  KMSFS_RETURN_IF_ERROR(backing->PWrite(w.bytes, w.offset));
  if (changed_out != nullptr) *changed_out = true;
  if (!w.clear_previous) {
    if (sync) KMSFS_RETURN_IF_ERROR(backing->Sync(/*data_only=*/true));
    return Status::Ok();
  }
  // This sync also gives `sync` its meaning (the new set is durable). The zeros are not synced:
  // lost in a crash, they leave the superseded set in the slot not in force (format.md §6.1).
  KMSFS_RETURN_IF_ERROR(backing->Sync(/*data_only=*/true));
  const Bytes zeros(format::FileHeader::kSlotSize, 0);
  return backing->PWrite(zeros, w.previous_offset);
}

}  // namespace

Result<FileKey> CreateFile(BackingFile* backing, const Volume& volume, DataKeySource* keys,
                           const Requester& who, const LinkName* link) {
  KMSFS_CHECK(backing != nullptr && keys != nullptr);
  if (volume.links_enabled() && link == nullptr) {
    return Error(Code::kInvalidArgument, "a new file needs its first link in this volume");
  }
  KMSFS_ASSIGN_OR_RETURN(uint64_t size, backing->Size());
  if (size != 0) return Error(Code::kFailedPrecondition, "new backing file is not empty");

  FileKey key;
  do {
    crypto::RandomBytes(key.file_id);
  } while (key.file_id == format::Id128{});
  KMSFS_ASSIGN_OR_RETURN(
      NewDataKey dek,
      keys->GenerateDataKey(volume.config().key_id, volume.FileContext(key.file_id), who));
  if (dek.plaintext.size() != kDekLen) {
    return Error(Code::kInternal, "key source returned a data key that is not 32 bytes");
  }
  format::FileHeader header;
  header.file_id = key.file_id;
  header.wrapped_dek = std::move(dek.wrapped);
  if (volume.links_enabled()) {
    // The first link goes into slot 0 with seq 1, in the same write as the key region.
    KMSFS_ASSIGN_OR_RETURN(format::LinkTag tag,
                           volume.LinkTagFor(key.file_id, link->dir_id, link->backing_name));
    header.links_seq = 1;
    header.links = {tag};
  }
  auto page = format::SerializeFileHeader(header);
  if (!page.ok()) {
    return Error(Code::kInternal,
                 "key source returned an unusable wrapped key: " + page.error().message());
  }
  KMSFS_RETURN_IF_ERROR(backing->PWrite(*page, 0));
  KMSFS_ASSIGN_OR_RETURN(auto content,
                         FileContent::Open(volume.id(), key.file_id, dek.plaintext, backing));
  KMSFS_RETURN_IF_ERROR(content->InitializeEmpty());
  key.dek = std::move(dek.plaintext);
  return key;
}

Result<FileKey> OpenFileKey(BackingFile* backing, const Volume& volume, DataKeySource* keys,
                            const Requester& who, const LinkName* via) {
  KMSFS_CHECK(backing != nullptr && keys != nullptr);
  KMSFS_ASSIGN_OR_RETURN(format::FileHeader header, ReadHeader(backing));
  if (volume.links_enabled() && via != nullptr) {
    // Before keyd: a file that is not linked here gets no unwrap (and no audit record of one).
    KMSFS_ASSIGN_OR_RETURN(bool linked, HeaderHasLink(header, volume, *via));
    if (!linked) {
      return Error(Code::kCorrupt,
                   "file header is not linked under this name (a file copied or moved over it)");
    }
  }
  FileKey key;
  key.file_id = header.file_id;
  auto dek = keys->Decrypt(header.wrapped_dek, volume.FileContext(header.file_id), who);
  if (!dek.ok()) {
    // A header whose wrapped key names a key keyd has never had was edited (or belongs to a
    // state that is not this keyd's): that is a damaged file (EIO), not a missing file (ENOENT).
    if (dek.error().code() == Code::kNotFound) {
      return Error(Code::kCorrupt, "file header names a key that keyd does not have");
    }
    return dek.error();
  }
  key.dek = std::move(dek).value();
  if (key.dek.size() != kDekLen) {
    return Error(Code::kInternal, "key source returned a data key that is not 32 bytes");
  }
  return key;
}

Result<bool> HasLink(BackingFile* backing, const Volume& volume, const LinkName& link) {
  KMSFS_CHECK(backing != nullptr);
  KMSFS_ASSIGN_OR_RETURN(format::FileHeader header, ReadHeader(backing));
  if (!volume.links_enabled()) return true;
  return HeaderHasLink(header, volume, link);
}

Status UpdateLinks(BackingFile* backing, const Volume& volume, const LinkName* add,
                   const LinkName* remove, bool sync, size_t max_links, bool* changed_out) {
  KMSFS_CHECK(backing != nullptr);
  if (changed_out != nullptr) *changed_out = false;
  if (!volume.links_enabled() || (add == nullptr && remove == nullptr)) return Status::Ok();
  KMSFS_ASSIGN_OR_RETURN(format::FileHeader header, ReadHeader(backing));
  std::vector<format::LinkTag> links = header.links;
  bool changed = false;
  if (remove != nullptr) {
    KMSFS_ASSIGN_OR_RETURN(format::LinkTag tag,
                           volume.LinkTagFor(header.file_id, remove->dir_id, remove->backing_name));
    const auto it = std::find(links.begin(), links.end(), tag);
    if (it != links.end()) {
      links.erase(it);
      changed = true;
    }
  }
  if (add != nullptr) {
    KMSFS_ASSIGN_OR_RETURN(format::LinkTag tag,
                           volume.LinkTagFor(header.file_id, add->dir_id, add->backing_name));
    if (std::find(links.begin(), links.end(), tag) == links.end()) {
      if (links.size() >= std::min(max_links, format::FileHeader::kMaxLinkTags)) {
        return Error(Code::kInvalidArgument, "too many links to one file", EMLINK);
      }
      links.push_back(tag);
      changed = true;
    }
  }
  if (!changed) return Status::Ok();
  KMSFS_ASSIGN_OR_RETURN(format::LinksWrite w, format::PrepareLinksWrite(header, std::move(links)));
  // The header is not the contents: the writes below must not move the mtime the filesystem
  // reports (a user's mv keeps it). The times go back even when a step fails. A data write
  // through another handle racing with this one may lose its mtime update; such a write moves
  // it again the next time. Failing to read or restore the times only costs the mtime: it is
  // logged, never turned into a failed link change (whose callers would then undo a done one).
  auto times = backing->GetTimes();
  if (!times.ok()) {
    log::Get("fs.core")->warn("link change: reading the backing file's times: {}",
                              times.error().message());
  }
  Status st = WriteLinkSlots(backing, w, sync, changed_out);
  if (times.ok()) {
    if (Status restored = backing->SetTimes(*times); !restored.ok()) {
      log::Get("fs.core")->warn("link change: restoring the backing file's times: {}",
                                restored.error().message());
    }
  }
  return st;
}

}  // namespace kmsfs::fs
