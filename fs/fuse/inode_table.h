// InodeTable: the kernel's inodes — one per backing (st_dev, st_ino), with lookup counts, the
// path each was last looked up under, and the per-inode open state.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "common/base/unique_fd.h"
#include "common/format/ids.h"
#include "fs/core/open_file_table.h"

namespace kmsfs::fs {

struct BackingId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const BackingId&) const = default;
};

// One backing file, directory, symlink or special file the kernel knows about. Created and
// destroyed only by InodeTable; the kernel refers to it by its address (as passthrough_hp does),
// which stays valid until the last Forget.
//
// Lock order (outermost first): io_mu, then mu, then InodeTable::mu_. No thread holds two
// inodes' io_mu or mu at once.
class Inode {
 public:
  Inode(UniqueFd fd, BackingId id, mode_t type) : fd_(std::move(fd)), id_(id), type_(type) {}
  Inode(const Inode&) = delete;
  Inode& operator=(const Inode&) = delete;

  // O_PATH | O_NOFOLLOW fd of the backing object; valid for the inode's whole life.
  int fd() const { return fd_.get(); }
  const BackingId& id() const { return id_; }
  mode_t type() const { return type_; }  // S_IFMT bits; a backing inode never changes type
  bool is_dir() const { return S_ISDIR(type_); }
  bool is_reg() const { return S_ISREG(type_); }

  // Regular files: shared by read/write/fsync/truncate for the duration of one call, so that
  // content is stable; exclusive to install or drop the content (first open, last release,
  // read-only → read-write upgrade) and for O_APPEND writes, which must find the end and write
  // there as one step.
  std::shared_mutex io_mu;
  // Held around a change of the backing object's mode or owner (SetAttr) and around
  // KillSuidGid's read-then-write of the mode, so that clearing set-id bits never writes back a
  // mode from before a concurrent chmod: the kernel serializes writes, truncates and chmod on
  // the inode, but not an O_TRUNC open. A leaf: nothing else is taken while it is held.
  std::mutex mode_mu;
  // Guards the fields below it.
  std::mutex mu;
  // Regular files: fs/core's open state (backing fd, DEK, FileContent) while any handle is
  // open, shared by all handles so they see one FileContent (one lock, one size); the DEK is
  // wiped when it goes at the last release. Null otherwise. Written under io_mu exclusive + mu;
  // read under either. We keep our own count rather than OpenFileTable's because a state may be
  // upgraded from a read-only to a read-write backing fd (`writable`).
  std::unique_ptr<OpenFile> open_file;
  bool writable = false;  // open_file's backing fd is O_RDWR; as open_file
  int open_count = 0;     // guarded by mu
  // Open handles whose opener keyd refused at the last revalidation; when it equals
  // open_count, open_file's DEK is wiped. Guarded by mu.
  int refused_handles = 0;
  std::optional<format::Id128> dir_id;   // guarded by mu; directories, read once
  std::optional<format::Id128> file_id;  // guarded by mu; regular files, for xattrs
  // What is known of the backing object's security.capability, which the kernel asks for
  // before a write(2) (file_remove_privs; once per attribute refresh under
  // FUSE_HANDLE_KILLPRIV_V2, kill_priv.h, before every write without it) and which almost no
  // file has. Bit 0 (kNoCaps): known absent, so getxattr answers ENODATA without a syscall. The
  // other bits count setxattr calls: a getxattr sets the bit only if no setxattr finished since
  // it looked (xattr_ops.cc). Valid because only this mount changes the backing tree's xattrs
  // while it is mounted.
  static constexpr uint32_t kNoCaps = 1;
  std::atomic<uint32_t> caps_state{0};
  // Regular files in a "header-links" volume: the directory entry the inode was last looked up,
  // created, linked or renamed under, which open checks against the header's link tags
  // (format.md §6.2); empty once that entry was unlinked or replaced. Guarded by mu.
  std::optional<LinkName> link;

 private:
  friend class InodeTable;
  UniqueFd fd_;
  const BackingId id_;
  const mode_t type_;
  // Guarded by InodeTable::mu_:
  uint64_t nlookup_ = 0;     // the kernel's lookup count
  uint64_t child_refs_ = 0;  // inodes whose parent_ is this one (keeps paths computable)
  Inode* parent_ = nullptr;  // where it was last looked up, created or renamed to
  std::string name_;         // plaintext name in parent_ (never logged)
};

// Thread-safe. Owns every Inode.
class InodeTable {
 public:
  // `root_fd`: O_PATH fd of the cipher directory; the root is never forgotten.
  InodeTable(UniqueFd root_fd, const struct stat& root_st);
  ~InodeTable();
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  Inode* root() { return root_; }

  // Called after a successful lookup/create of `name` in `parent` found the backing object
  // `st` (opened as `fd`): returns the inode for st's (dev, ino) with its lookup count bumped by
  // one, creating it (and adopting `fd`) if new, else closing `fd`. Records parent/name as the
  // inode's current path: for hard links the path is the one last looked up.
  Inode* Remember(UniqueFd fd, const struct stat& st, Inode* parent, std::string name);
  // One more reference on `inode` that is not the kernel's, so it outlives a concurrent FORGET
  // (the revalidation thread); dropped with Forget(inode, 1).
  void Pin(Inode* inode);
  // Drops `n` kernel lookups; frees the inode (and unpins its parent chain) at zero.
  void Forget(Inode* inode, uint64_t n);
  // After a successful rename: `inode` now lives at (new_parent, new_name).
  void Moved(Inode* inode, Inode* new_parent, std::string new_name);
  // The inode of a backing object, if the kernel knows it (for rename bookkeeping); nullptr
  // otherwise. Not counted: valid only while the caller's request pins it.
  Inode* Find(const BackingId& id);
  // "/a/b/c" inside the volume, from the recorded names ("/" for the root). Plaintext: for
  // keyd's policy and audit only, never for our log.
  std::string PathOf(const Inode* inode);
  // Path of a would-be child (for create: the inode does not exist yet).
  std::string ChildPath(const Inode* parent, std::string_view name);
  size_t size();

 private:
  struct IdHash {
    size_t operator()(const BackingId& id) const {
      return std::hash<uint64_t>()(uint64_t(id.ino) * 0x9E3779B97F4A7C15ull ^ uint64_t(id.dev));
    }
  };
  // REQUIRES: mu_ held.
  void SetParentLocked(Inode* inode, Inode* parent, std::string name);
  void MaybeFreeLocked(Inode* inode);
  std::string PathOfLocked(const Inode* inode) const;

  std::mutex mu_;  // leaf lock (see Inode's lock order)
  std::unordered_map<BackingId, std::unique_ptr<Inode>, IdHash> inodes_;  // guarded by mu_
  Inode* root_;
};

}  // namespace kmsfs::fs
