// OpenFileTable: the per-inode state (backing file, DEK, FileContent) of files with open handles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "common/base/status.h"
#include "common/crypto/hash.h"
#include "common/format/ids.h"
#include "fs/core/backing_file.h"
#include "fs/core/file_content.h"
#include "fs/core/file_header_io.h"

namespace kmsfs::fs {

// One inode's open state. Owns the backing file, the file's DEK (locked memory) and the
// FileContent over them; destroying it wipes the DEK and the content key schedule. Usable on its
// own by a caller that keeps its own per-inode refcount.
//
// Revocation (docs/filesystem.md "Revocation of open files"): WipeKey drops the DEK and the
// content key schedule while the state (and its backing fd) stays, so that handles still open
// fail their I/O; RestoreKey puts back a DEK that keyd granted again.
// Thread-safety: content()/Content() and SameKey may be called concurrently with each other;
// WipeKey and RestoreKey need exclusive access (the caller's per-inode lock, held exclusively).
class OpenFile {
 public:
  // kInvalidArgument if the key is not 32 bytes. No I/O.
  static Result<std::unique_ptr<OpenFile>> Create(const format::Id128& volume_id,
                                                  std::unique_ptr<BackingFile> backing,
                                                  FileKey key);
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;

  const format::Id128& file_id() const { return file_id_; }
  // The content while the DEK is held; kKeyUnavailable (ENOKEY) after WipeKey.
  Result<FileContent*> Content() const;
  // REQUIRES: has_key() (KMSFS_CHECK).
  FileContent& content() const;
  bool has_key() const { return content_ != nullptr; }
  BackingFile& backing() const { return *backing_; }
  // Whether `key` is this file's: the same file id and the same DEK (compared in constant time;
  // after WipeKey through the key check value below).
  bool SameKey(const FileKey& key) const;
  // Wipes the DEK and the content key schedule (idempotent). REQUIRES exclusive access.
  void WipeKey();
  // Installs `key` again after WipeKey; a no-op (the given key is wiped) if the DEK is still
  // held. kCorrupt unless `key` is the file's own (SameKey): a header replaced while the file
  // was open must not slip a different DEK into the open state. REQUIRES exclusive access.
  Status RestoreKey(FileKey key);

 private:
  OpenFile(const format::Id128& volume_id, std::unique_ptr<BackingFile> backing, FileKey key)
      : volume_id_(volume_id),
        file_id_(key.file_id),
        key_check_(KeyCheck(key.dek)),
        backing_(std::move(backing)),
        key_(std::move(key)) {}
  // A one-way fingerprint of a DEK (HMAC-SHA-256 keyed by it over a fixed label), kept after
  // WipeKey so that RestoreKey can tell the file's own DEK from another; it reveals nothing of
  // the key.
  static crypto::Sha256Digest KeyCheck(const crypto::SecretBytes& dek);
  const format::Id128 volume_id_;
  const format::Id128 file_id_;
  const crypto::Sha256Digest key_check_;
  std::unique_ptr<BackingFile> backing_;
  FileKey key_;                           // dek empty after WipeKey
  std::unique_ptr<FileContent> content_;  // borrows *backing_; null after WipeKey
};

// Inode number -> OpenFile, refcounted by open handles.
//
// Policy: the DEK is NOT cached across opens. Every open() must first get a fresh FileKey from
// the key source (OpenFileKey/CreateFile), so a policy change, DisableKey or a keyd outage
// applies to the very next open; Acquire demands that key as proof. While handles are open,
// the inode's state (and DEK) stays in memory and later opens share it, so all handles see one
// FileContent (one lock, one size). Open handles are revalidated by fs/fuse (the mount's
// key_revalidate period), which wipes the DEK with OpenFile::WipeKey when keyd refuses.
//
// Thread-safe; mu_ is a leaf lock (no I/O and no key source call under it).
class OpenFileTable {
 public:
  explicit OpenFileTable(const format::Id128& volume_id) : volume_id_(volume_id) {}
  OpenFileTable(const OpenFileTable&) = delete;
  OpenFileTable& operator=(const OpenFileTable&) = delete;

  // Registers one more open handle of `ino`, with the key this open just obtained. If `ino` has
  // no state yet, builds it over `backing`. If it has, `backing` and `key` are dropped (the DEK
  // wiped) after checking that `key` is the open file's key: kCorrupt otherwise (the header
  // changed on disk while the file was open). The returned reference keeps the state alive for
  // the caller even after Release; use it for the handle's I/O.
  Result<std::shared_ptr<OpenFile>> Acquire(uint64_t ino, std::unique_ptr<BackingFile> backing,
                                            FileKey key);
  // Drops one handle of `ino`; the last one removes the state (it is destroyed, and the DEK
  // wiped, once no caller still holds a reference from Acquire/Find). Releasing an inode that
  // has no open handle is a bug in the caller (KMSFS_CHECK).
  void Release(uint64_t ino);
  // The state of `ino` if it has open handles, else null (e.g. truncate(2) by path must then
  // get a key from the key source like an open).
  std::shared_ptr<OpenFile> Find(uint64_t ino) const;
  size_t open_inodes() const;

 private:
  struct Slot {
    std::shared_ptr<OpenFile> file;
    uint64_t handles = 0;
  };
  const format::Id128 volume_id_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Slot> slots_;  // guarded by mu_
};

}  // namespace kmsfs::fs
