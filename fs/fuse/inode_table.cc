#include "fs/fuse/inode_table.h"

#include <utility>
#include <vector>

#include "common/base/check.h"

namespace kmsfs::fs {

InodeTable::InodeTable(UniqueFd root_fd, const struct stat& root_st) {
  const BackingId id{root_st.st_dev, root_st.st_ino};
  auto root = std::make_unique<Inode>(std::move(root_fd), id, root_st.st_mode & S_IFMT);
  root->nlookup_ = 1;  // never forgotten: the kernel does not count lookups of the root
  root_ = root.get();
  inodes_.emplace(id, std::move(root));
}

InodeTable::~InodeTable() = default;

Inode* InodeTable::Remember(UniqueFd fd, const struct stat& st, Inode* parent, std::string name) {
  const BackingId id{st.st_dev, st.st_ino};
  std::lock_guard lock(mu_);
  auto it = inodes_.find(id);
  Inode* inode;
  if (it == inodes_.end()) {
    auto fresh = std::make_unique<Inode>(std::move(fd), id, st.st_mode & S_IFMT);
    inode = fresh.get();
    inodes_.emplace(id, std::move(fresh));
  } else {
    inode = it->second.get();  // `fd` closes here: the table already holds one for this object
  }
  ++inode->nlookup_;
  if (inode != root_) SetParentLocked(inode, parent, std::move(name));
  return inode;
}

void InodeTable::Pin(Inode* inode) {
  if (inode == root_) return;
  std::lock_guard lock(mu_);
  ++inode->nlookup_;
}

void InodeTable::Forget(Inode* inode, uint64_t n) {
  if (inode == root_) return;
  std::lock_guard lock(mu_);
  KMSFS_CHECK(inode->nlookup_ >= n);  // the kernel never forgets more than it looked up
  inode->nlookup_ -= n;
  MaybeFreeLocked(inode);
}

void InodeTable::Moved(Inode* inode, Inode* new_parent, std::string new_name) {
  if (inode == root_) return;
  std::lock_guard lock(mu_);
  SetParentLocked(inode, new_parent, std::move(new_name));
}

Inode* InodeTable::Find(const BackingId& id) {
  std::lock_guard lock(mu_);
  auto it = inodes_.find(id);
  return it == inodes_.end() ? nullptr : it->second.get();
}

std::string InodeTable::PathOf(const Inode* inode) {
  std::lock_guard lock(mu_);
  return PathOfLocked(inode);
}

std::string InodeTable::ChildPath(const Inode* parent, std::string_view name) {
  std::lock_guard lock(mu_);
  std::string path = PathOfLocked(parent);
  if (path.size() > 1) path += '/';
  path += name;
  return path;
}

size_t InodeTable::size() {
  std::lock_guard lock(mu_);
  return inodes_.size();
}

void InodeTable::SetParentLocked(Inode* inode, Inode* parent, std::string name) {
  if (inode->parent_ != parent) {
    ++parent->child_refs_;
    Inode* old = std::exchange(inode->parent_, parent);
    if (old != nullptr) {
      --old->child_refs_;
      MaybeFreeLocked(old);
    }
  }
  inode->name_ = std::move(name);
}

void InodeTable::MaybeFreeLocked(Inode* inode) {
  // Iterative, so a long chain of parents that all lose their last reference at once does not
  // recurse once per level.
  while (inode != nullptr && inode != root_ && inode->nlookup_ == 0 && inode->child_refs_ == 0) {
    Inode* parent = inode->parent_;
    if (parent != nullptr) --parent->child_refs_;
    inodes_.erase(inode->id_);
    inode = parent;
  }
}

std::string InodeTable::PathOfLocked(const Inode* inode) const {
  // Renames through the mount keep the recorded parents a tree; the depth cap only guards
  // against a cycle made behind our back in the backing directory (a hang would be worse than a
  // wrong path, which keyd's policy then decides on).
  constexpr size_t kMaxDepth = 4096;
  std::vector<const std::string*> parts;
  for (const Inode* i = inode; i != nullptr && i != root_ && parts.size() < kMaxDepth;
       i = i->parent_) {
    parts.push_back(&i->name_);
  }
  if (parts.empty()) return "/";
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    path += '/';
    path += **it;
  }
  return path;
}

}  // namespace kmsfs::fs
