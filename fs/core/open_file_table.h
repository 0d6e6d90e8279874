// OpenFileTable: the per-inode state (backing file, DEK, FileContent) of files with open handles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "common/base/status.h"
#include "common/format/ids.h"
#include "fs/core/backing_file.h"
#include "fs/core/file_content.h"
#include "fs/core/file_header_io.h"

namespace kmsfs::fs {

// One inode's open state. Owns the backing file, the file's DEK (locked memory) and the
// FileContent over them; destroying it wipes the DEK and the content key schedule. Usable on its
// own by a caller that keeps its own per-inode refcount. Thread-safe as FileContent is.
class OpenFile {
 public:
  // kInvalidArgument if the key is not 32 bytes. No I/O.
  static Result<std::unique_ptr<OpenFile>> Create(const format::Id128& volume_id,
                                                  std::unique_ptr<BackingFile> backing,
                                                  FileKey key);
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;

  const format::Id128& file_id() const { return key_.file_id; }
  FileContent& content() const { return *content_; }
  BackingFile& backing() const { return *backing_; }
  // Whether `key` is this file's: the same file id and the same DEK (compared in constant time).
  bool SameKey(const FileKey& key) const;

 private:
  OpenFile(std::unique_ptr<BackingFile> backing, FileKey key)
      : backing_(std::move(backing)), key_(std::move(key)) {}
  std::unique_ptr<BackingFile> backing_;
  FileKey key_;
  std::unique_ptr<FileContent> content_;  // borrows *backing_; declared last, destroyed first
};

// Inode number -> OpenFile, refcounted by open handles.
//
// Policy: the DEK is NOT cached across opens. Every open() must first get a fresh FileKey from
// the key source (OpenFileKey/CreateFile), so a policy change, DisableKey or a keyd outage
// applies to the very next open; Acquire demands that key as proof. While handles are open,
// the inode's state (and DEK) stays in memory and later opens share it, so all handles see one
// FileContent (one lock, one size). Revalidating long-open handles against policy changes is a
// later lifecycle issue: today a revoked key stops new opens, not handles already open.
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
