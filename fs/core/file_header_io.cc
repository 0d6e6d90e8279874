#include "fs/core/file_header_io.h"

#include <utility>

#include "common/crypto/random.h"
#include "common/format/file_header.h"
#include "fs/core/file_content.h"

namespace kmsfs::fs {
namespace {

constexpr size_t kDekLen = 32;

}  // namespace

Result<FileKey> CreateFile(BackingFile* backing, const Volume& volume, DataKeySource* keys,
                           const Requester& who) {
  KMSFS_CHECK(backing != nullptr && keys != nullptr);
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
  auto page = format::SerializeFileHeader(header);
  if (!page.ok()) {
    return Error(Code::kInternal, "key source returned an unusable wrapped key: " +
                                      page.error().message());
  }
  KMSFS_RETURN_IF_ERROR(backing->PWrite(*page, 0));
  KMSFS_ASSIGN_OR_RETURN(auto content,
                         FileContent::Open(volume.id(), key.file_id, dek.plaintext, backing));
  KMSFS_RETURN_IF_ERROR(content->InitializeEmpty());
  key.dek = std::move(dek.plaintext);
  return key;
}

Result<FileKey> OpenFileKey(BackingFile* backing, const Volume& volume, DataKeySource* keys,
                            const Requester& who) {
  KMSFS_CHECK(backing != nullptr && keys != nullptr);
  Bytes page(format::FileHeader::kSize);
  KMSFS_ASSIGN_OR_RETURN(size_t got, backing->PRead(page, 0));
  if (got != page.size()) return Error(Code::kCorrupt, "file header: backing file is truncated");
  KMSFS_ASSIGN_OR_RETURN(format::FileHeader header, format::ParseFileHeader(page));
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

}  // namespace kmsfs::fs
