#include "fs/core/open_file_table.h"

#include <string_view>
#include <utility>

#include "common/base/check.h"
#include "common/crypto/secret.h"

namespace kmsfs::fs {

Result<std::unique_ptr<OpenFile>> OpenFile::Create(const format::Id128& volume_id,
                                                   std::unique_ptr<BackingFile> backing,
                                                   FileKey key) {
  KMSFS_CHECK(backing != nullptr);
  std::unique_ptr<OpenFile> file(new OpenFile(volume_id, std::move(backing), std::move(key)));
  KMSFS_ASSIGN_OR_RETURN(file->content_, FileContent::Open(volume_id, file->file_id_,
                                                           file->key_.dek, file->backing_.get()));
  return file;
}

Result<FileContent*> OpenFile::Content() const {
  if (content_ == nullptr) {
    return Error(Code::kKeyUnavailable, "the file's key was revoked while it was open");
  }
  return content_.get();
}

FileContent& OpenFile::content() const {
  KMSFS_CHECK(content_ != nullptr);
  return *content_;
}

crypto::Sha256Digest OpenFile::KeyCheck(const crypto::SecretBytes& dek) {
  static constexpr std::string_view kLabel = "kmsfs open-file key check v1";
  return crypto::HmacSha256(
      dek.span(), ByteSpan(reinterpret_cast<const uint8_t*>(kLabel.data()), kLabel.size()));
}

bool OpenFile::SameKey(const FileKey& key) const {
  if (key.file_id != file_id_) return false;
  if (content_ != nullptr) return crypto::ConstantTimeEqual(key.dek.span(), key_.dek.span());
  const crypto::Sha256Digest check = KeyCheck(key.dek);
  return crypto::ConstantTimeEqual(check, key_check_);
}

void OpenFile::WipeKey() {
  content_.reset();                  // wipes the key schedule
  key_.dek = crypto::SecretBytes();  // the old buffer is wiped and unlocked as it goes
}

Status OpenFile::RestoreKey(FileKey key) {
  if (!SameKey(key)) return Error(Code::kCorrupt, "file header changed while the file is open");
  if (content_ != nullptr) return Status::Ok();
  KMSFS_ASSIGN_OR_RETURN(content_,
                         FileContent::Open(volume_id_, file_id_, key.dek, backing_.get()));
  key_.dek = std::move(key.dek);
  return Status::Ok();
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
