#include "fs/core/open_file_table.h"

#include <utility>

#include "common/base/check.h"
#include "common/crypto/secret.h"

namespace kmsfs::fs {

Result<std::unique_ptr<OpenFile>> OpenFile::Create(const format::Id128& volume_id,
                                                   std::unique_ptr<BackingFile> backing,
                                                   FileKey key) {
  KMSFS_CHECK(backing != nullptr);
  std::unique_ptr<OpenFile> file(new OpenFile(std::move(backing), std::move(key)));
  KMSFS_ASSIGN_OR_RETURN(file->content_, FileContent::Open(volume_id, file->key_.file_id,
                                                           file->key_.dek, file->backing_.get()));
  return file;
}

bool OpenFile::SameKey(const FileKey& key) const {
  return key.file_id == key_.file_id && crypto::ConstantTimeEqual(key.dek.span(), key_.dek.span());
}

Result<std::shared_ptr<OpenFile>> OpenFileTable::Acquire(uint64_t ino,
                                                         std::unique_ptr<BackingFile> backing,
                                                         FileKey key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(ino);
  if (it != slots_.end()) {
    if (!it->second.file->SameKey(key)) {
      return Error(Code::kCorrupt, "file header changed while the file is open (inode " +
                                       std::to_string(ino) + ")");
    }
    ++it->second.handles;
    return it->second.file;
  }
  KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<OpenFile> file,
                         OpenFile::Create(volume_id_, std::move(backing), std::move(key)));
  Slot& slot = slots_[ino];
  slot.file = std::move(file);
  slot.handles = 1;
  return slot.file;
}

void OpenFileTable::Release(uint64_t ino) {
  std::shared_ptr<OpenFile> last;  // destroyed after the lock is dropped
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(ino);
  KMSFS_CHECK(it != slots_.end() && it->second.handles > 0);
  if (--it->second.handles == 0) {
    last = std::move(it->second.file);
    slots_.erase(it);
  }
}

std::shared_ptr<OpenFile> OpenFileTable::Find(uint64_t ino) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(ino);
  return it == slots_.end() ? nullptr : it->second.file;
}

size_t OpenFileTable::open_inodes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slots_.size();
}

}  // namespace kmsfs::fs
