// Filesystem: operations on directory entries — mknod, mkdir, symlink, link, unlink, rmdir,
// rename, readlink. Every new name is encrypted under its parent's dir id; long names get their
// side file first and lose it last (format.md §8.3).
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "common/base/scope_exit.h"
#include "common/format/name_encoding.h"
#include "fs/core/dir_id.h"
#include "fs/core/small_file.h"
#include "fs/fuse/filesystem.h"
#include "fs/fuse/sys_util.h"

namespace kmsfs::fs {

struct Filesystem::RemovedDirId {
  UniqueFd dir_fd;                  // the directory being removed (O_RDONLY)
  std::optional<format::Id128> id;  // its id, if it had one and we unlinked it
};

namespace {

// The regular file behind the O_PATH fd `path_fd`, opened read-write to update its link tags.
// A non-root mount may own a read-only file (mode 0444) that it cannot open for writing, yet
// must be able to rename: the owner's write bit is lent for the open and put back at once.
Result<std::unique_ptr<PosixBackingFile>> OpenForLinks(int path_fd) {
  const ProcPath proc(path_fd);
  UniqueFd fd(::open(proc.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd && errno == EACCES) {
    struct stat st;
    if (::fstat(path_fd, &st) == 0 && st.st_uid == ::geteuid() && (st.st_mode & S_IWUSR) == 0 &&
        ::chmod(proc.c_str(), (st.st_mode & 07777) | S_IWUSR) == 0) {
      fd.Reset(::open(proc.c_str(), O_RDWR | O_CLOEXEC));
      const int err = errno;
      ::chmod(proc.c_str(), st.st_mode & 07777);
      errno = err;
    } else {
      errno = EACCES;
    }
  }
  if (!fd) return SysError("open backing file to update its links", errno);
  return std::make_unique<PosixBackingFile>(std::move(fd));
}

// OpenForLinks for the entry `backing_name` of `dir_fd`.
Result<std::unique_ptr<PosixBackingFile>> OpenEntryForLinks(int dir_fd,
                                                            const std::string& backing_name) {
  UniqueFd path(::openat(dir_fd, backing_name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!path) return SysError("open backing file to update its links", errno);
  return OpenForLinks(path.get());
}

}  // namespace

void Filesystem::SetLink(Inode* inode, LinkName link) {
  std::lock_guard lock(inode->mu);
  inode->link = std::move(link);
}

Result<FileKey> Filesystem::OpenKeyVia(BackingFile* backing, Inode* inode, const Requester& who) {
  if (!volume_->links_enabled()) return OpenFileKey(backing, *volume_, keys_, who);
  for (int attempt = 0;; ++attempt) {
    std::optional<LinkName> via;
    {
      std::lock_guard lock(inode->mu);
      via = inode->link;
    }
    if (!via) {
      struct stat st;
      if (::fstatat(inode->fd(), "", &st, AT_EMPTY_PATH) != 0) return SysError("open: stat", errno);
      // Unlinked everywhere (an open-unlinked file reopened through /proc/PID/fd): no name is
      // left that could have been substituted.
      if (st.st_nlink == 0) return OpenFileKey(backing, *volume_, keys_, who);
      // The entry it was last looked up under was unlinked or replaced, and the kernel reached
      // it through another, cached name: ESTALE makes the kernel walk the path again with fresh
      // lookups (LOOKUP_REVAL), which record the name actually used.
      return Errno(ESTALE, "open: the entry this file was looked up under is gone");
    }
    auto key = OpenFileKey(backing, *volume_, keys_, who, &*via);
    if (key.ok() || key.error().code() != Code::kCorrupt || attempt > 0) return key;
    // A rename may have moved the file between our reading its link and its header (the new tag
    // is written before, the old one removed after the inode's link changes): once more.
    std::lock_guard lock(inode->mu);
    if (inode->link == via) return key;
  }
}

Status Filesystem::ChownNew(fuse_req_t req, Inode* parent, const std::string& backing_name,
                            mode_t mode) {
  if (!as_root_) return Status::Ok();
  const fuse_ctx* ctx = fuse_req_ctx(req);
  gid_t gid = ctx->gid;
  struct stat pst;
  if (::fstatat(parent->fd(), "", &pst, AT_EMPTY_PATH) != 0) {
    return SysError("create: stat parent", errno);
  }
  // setgid directories hand their group down (and, for directories, the backing fs has already
  // copied S_ISGID to the new one, since the backing mode is the plaintext mode).
  if (pst.st_mode & S_ISGID) gid = pst.st_gid;
  if (::fchownat(parent->fd(), backing_name.c_str(), ctx->uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return SysError("create: chown to the caller", errno);
  }
  // chown clears set-id bits on non-directories, even for root; put back what was asked for.
  if (!S_ISDIR(mode) && !S_ISLNK(mode) && (mode & (S_ISUID | S_ISGID)) != 0) {
    if (::fchmodat(parent->fd(), backing_name.c_str(), mode & 07777, 0) != 0) {
      return SysError("create: chmod", errno);
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<OpenFile>> Filesystem::CreateRegular(fuse_req_t req, Inode* parent,
                                                            const char* name, const Encoded& enc,
                                                            mode_t mode) {
  bool side_created = false;
  KMSFS_RETURN_IF_ERROR(WriteSideFile(parent, enc, &side_created));
  // O_EXCL always: only a file we made gets a new header. O_RDWR whatever the caller asked,
  // since writes are read-modify-write of whole blocks.
  UniqueFd fd(::openat(parent->fd(), enc.backing_name.c_str(),
                       O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode & 07777));
  if (!fd) {
    const int err = errno;
    if (side_created) RemoveSideFile(parent, enc);
    return SysError("create", err);
  }
  ScopeExit undo([&] {
    ::unlinkat(parent->fd(), enc.backing_name.c_str(), 0);
    if (side_created) RemoveSideFile(parent, enc);
  });
  KMSFS_RETURN_IF_ERROR(ChownNew(req, parent, enc.backing_name, S_IFREG | mode));
  auto backing = std::make_unique<PosixBackingFile>(std::move(fd));
  // The key request names the caller and the new file's path: keyd may refuse to create here.
  const Requester who = Who(req, inodes_.ChildPath(parent, name));
  // The header's first link tag names this entry (format.md §6.2), in the header's first write.
  LinkName link;
  if (volume_->links_enabled()) {
    KMSFS_ASSIGN_OR_RETURN(link.dir_id, DirIdOf(parent));
    link.backing_name = enc.backing_name;
  }
  KMSFS_ASSIGN_OR_RETURN(FileKey key, CreateFile(backing.get(), *volume_, keys_, who,
                                                 volume_->links_enabled() ? &link : nullptr));
  KMSFS_ASSIGN_OR_RETURN(auto file,
                         OpenFile::Create(volume_->id(), std::move(backing), std::move(key)));
  undo.Dismiss();
  return file;
}

Result<fuse_entry_param> Filesystem::MakeEntry(fuse_req_t req, Inode* parent, const char* name,
                                               mode_t mode, dev_t rdev,
                                               const char* symlink_target) {
  KMSFS_ASSIGN_OR_RETURN(Encoded enc, EncryptName(parent, name));
  if (S_ISREG(mode) && symlink_target == nullptr) {
    // mknod(S_IFREG): a complete file with its header, not an empty backing file that would
    // read as corrupt.
    KMSFS_ASSIGN_OR_RETURN(auto state, CreateRegular(req, parent, name, enc, mode));
    state.reset();  // no handle: the DEK is wiped right away
    return LookupBacking(parent, enc.backing_name, name);
  }
  std::string stored;
  if (symlink_target != nullptr) {
    KMSFS_ASSIGN_OR_RETURN(stored, volume_->names().EncryptSymlink(symlink_target));
  }
  bool side_created = false;
  KMSFS_RETURN_IF_ERROR(WriteSideFile(parent, enc, &side_created));
  ScopeExit undo_side([&] {
    if (side_created) RemoveSideFile(parent, enc);
  });
  const char* backing = enc.backing_name.c_str();
  int rc;
  if (symlink_target != nullptr) {
    rc = ::symlinkat(stored.c_str(), parent->fd(), backing);
  } else if (S_ISDIR(mode)) {
    // Owner rwx until the dir id is in: a non-root mount must be able to write it even for
    // mkdir -m 0555. The asked-for mode is applied right after.
    rc = ::mkdirat(parent->fd(), backing, (mode & 07777) | S_IRWXU);
  } else {
    rc = ::mknodat(parent->fd(), backing, mode, rdev);
  }
  if (rc != 0)
    return SysError(symlink_target ? "symlink" : S_ISDIR(mode) ? "mkdir" : "mknod", errno);
  UniqueFd new_dir;
  ScopeExit undo_entry([&] {
    if (new_dir) ::unlinkat(new_dir.get(), std::string(format::kDirIdName).c_str(), 0);
    ::unlinkat(parent->fd(), backing, S_ISDIR(mode) && !symlink_target ? AT_REMOVEDIR : 0);
  });
  if (S_ISDIR(mode) && symlink_target == nullptr) {
    new_dir.Reset(::openat(parent->fd(), backing, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!new_dir) return SysError("mkdir: open", errno);
    KMSFS_RETURN_IF_ERROR(CreateDirId(new_dir.get()).status());
    if ((mode & S_IRWXU) != S_IRWXU) {
      struct stat st;
      if (::fstat(new_dir.get(), &st) != 0) return SysError("mkdir: stat", errno);
      const mode_t final_mode = (st.st_mode & 07777 & ~S_IRWXU) | (mode & S_IRWXU);
      if (::fchmod(new_dir.get(), final_mode) != 0) return SysError("mkdir: chmod", errno);
    }
  }
  KMSFS_RETURN_IF_ERROR(ChownNew(req, parent, enc.backing_name, symlink_target ? S_IFLNK : mode));
  KMSFS_ASSIGN_OR_RETURN(fuse_entry_param e, LookupBacking(parent, enc.backing_name, name));
  undo_entry.Dismiss();
  undo_side.Dismiss();
  return e;
}

void Filesystem::MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                       dev_t rdev) {
  Inode* dir = InodeOf(parent);
  Answer(
      req, "mknod", dir->id().ino, [&]() { return MakeEntry(req, dir, name, mode, rdev, nullptr); },
      [](fuse_req_t r, const fuse_entry_param& e) { fuse_reply_entry(r, &e); });
}

void Filesystem::MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Inode* dir = InodeOf(parent);
  Answer(
      req, "mkdir", dir->id().ino,
      [&]() { return MakeEntry(req, dir, name, S_IFDIR | (mode & 07777), 0, nullptr); },
      [](fuse_req_t r, const fuse_entry_param& e) { fuse_reply_entry(r, &e); });
}

void Filesystem::Symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  Inode* dir = InodeOf(parent);
  Answer(
      req, "symlink", dir->id().ino,
      [&]() { return MakeEntry(req, dir, name, S_IFLNK | 0777, 0, target); },
      [](fuse_req_t r, const fuse_entry_param& e) { fuse_reply_entry(r, &e); });
}

void Filesystem::Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  Inode* inode = InodeOf(ino);
  Inode* dir = InodeOf(new_parent);
  Answer(
      req, "link", inode->id().ino,
      [&]() -> Result<fuse_entry_param> {
        KMSFS_ASSIGN_OR_RETURN(Encoded enc, EncryptName(dir, new_name));
        // Content keys are bound to the file id in the header, not to a name, but the new name
        // needs its link tag, durable before the name exists (format.md §6.2): a crash after the
        // backing link leaves a name that opens. An unused tag is only removed again if this
        // call added it.
        std::unique_ptr<PosixBackingFile> header;
        LinkName new_link;
        bool tag_added = false;
        if (inode->is_reg() && volume_->links_enabled()) {
          KMSFS_ASSIGN_OR_RETURN(new_link.dir_id, DirIdOf(dir));
          new_link.backing_name = enc.backing_name;
          KMSFS_ASSIGN_OR_RETURN(header, OpenForLinks(inode->fd()));
          KMSFS_RETURN_IF_ERROR(UpdateLinks(header.get(), *volume_, &new_link, nullptr,
                                            /*sync=*/true, kMaxHardLinks, &tag_added));
        }
        auto undo_tag = [&] {
          if (tag_added) (void)UpdateLinks(header.get(), *volume_, nullptr, &new_link, false);
        };
        bool side_created = false;
        if (Status st = WriteSideFile(dir, enc, &side_created); !st.ok()) {
          undo_tag();
          return st.error();
        }
        // linkat through /proc follows the magic link to the object itself (AT_EMPTY_PATH would
        // need CAP_DAC_READ_SEARCH).
        const ProcPath proc(inode->fd());
        if (::linkat(AT_FDCWD, proc.c_str(), dir->fd(), enc.backing_name.c_str(),
                     AT_SYMLINK_FOLLOW) != 0) {
          const int err = errno;
          if (side_created) RemoveSideFile(dir, enc);
          undo_tag();
          return SysError("link", err);
        }
        // The inode's recorded path becomes this new name: for hard links keyd sees the path
        // most recently looked up or linked.
        return LookupBacking(dir, enc.backing_name, new_name);
      },
      [](fuse_req_t r, const fuse_entry_param& e) { fuse_reply_entry(r, &e); });
}

void Filesystem::Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Inode* dir = InodeOf(parent);
  AnswerEmpty(req, "unlink", dir->id().ino, [&]() -> Status {
    KMSFS_ASSIGN_OR_RETURN(Encoded enc, EncryptName(dir, name));
    // A regular file keeps its other names: the removed name's tag goes after the backing
    // unlink (format.md §6.2). Were it lost in a crash, the stale tag would only name an entry
    // that no longer exists.
    struct stat st;
    const bool is_reg =
        volume_->links_enabled() &&
        ::fstatat(dir->fd(), enc.backing_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(st.st_mode);
    std::unique_ptr<PosixBackingFile> header;
    if (is_reg && st.st_nlink > 1) {
      auto opened = OpenEntryForLinks(dir->fd(), enc.backing_name);
      if (opened.ok()) {
        header = std::move(*opened);
      } else {
        LogFailure("unlink: open to remove the link tag", uint64_t(st.st_ino), opened.error());
      }
    }
    if (::unlinkat(dir->fd(), enc.backing_name.c_str(), 0) != 0) return SysError("unlink", errno);
    RemoveSideFile(dir, enc);
    if (is_reg) {
      KMSFS_ASSIGN_OR_RETURN(format::Id128 dir_id, DirIdOf(dir));
      const LinkName gone{dir_id, enc.backing_name};
      if (Inode* victim = inodes_.Find({st.st_dev, st.st_ino})) {
        std::lock_guard lock(victim->mu);
        if (victim->link == gone) victim->link.reset();
      }
      if (header) {
        Status removed = UpdateLinks(header.get(), *volume_, nullptr, &gone, /*sync=*/false);
        if (!removed.ok())
          LogFailure("unlink: remove the link tag", uint64_t(st.st_ino), removed.error());
      }
    }
    return Status::Ok();
  });
}

Result<Filesystem::RemovedDirId> Filesystem::PrepareRemoveDir(Inode* parent,
                                                              const std::string& backing_name) {
  RemovedDirId removed;
  removed.dir_fd.Reset(::openat(parent->fd(), backing_name.c_str(),
                                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!removed.dir_fd) return SysError("rmdir: open", errno);
  const int list_fd = ::dup(removed.dir_fd.get());
  if (list_fd < 0) return SysError("rmdir: dup", errno);
  DIR* dp = ::fdopendir(list_fd);
  if (dp == nullptr) {
    const int err = errno;
    ::close(list_fd);
    return SysError("rmdir: opendir", err);
  }
  ScopeExit close_dir([dp] { ::closedir(dp); });
  // "Empty" means: nothing but kmsfs.dirid, and long-name side files whose entry is gone (left
  // by a crash between the two unlinks; nobody can see or remove them otherwise).
  bool has_dir_id = false;
  std::vector<std::string> orphans;
  errno = 0;
  while (struct dirent* de = ::readdir(dp)) {  // NOLINT(concurrency-mt-unsafe): our own stream
    const std::string_view n = de->d_name;
    if (n == "." || n == "..") continue;
    if (n == format::kDirIdName) {
      has_dir_id = true;
      continue;
    }
    if (format::IsLongNameSideFile(n)) {
      const std::string entry(n.substr(0, n.size() - format::kLongNameSideSuffix.size()));
      struct stat st;
      if (::fstatat(removed.dir_fd.get(), entry.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 &&
          errno == ENOENT) {
        orphans.emplace_back(n);
        continue;
      }
    }
    return Errno(ENOTEMPTY, "rmdir");
  }
  for (const auto& o : orphans) ::unlinkat(removed.dir_fd.get(), o.c_str(), 0);
  if (has_dir_id) {
    auto id = ReadDirId(removed.dir_fd.get());
    if (id.ok()) removed.id = *id;
    const std::string dir_id_name(format::kDirIdName);
    if (::unlinkat(removed.dir_fd.get(), dir_id_name.c_str(), 0) != 0) {
      return SysError("rmdir: remove dir id", errno);
    }
  }
  return removed;
}

void Filesystem::RestoreDirId(const RemovedDirId& removed) {
  if (!removed.id) return;
  // Same id as before: the names inside (if any appeared) still decrypt.
  Status st = WriteNewFileAtomically(removed.dir_fd.get(), format::kDirIdName, *removed.id, 0400);
  if (!st.ok()) LogFailure("rmdir: restore dir id", 0, st.error());
}

void Filesystem::RmDir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Inode* dir = InodeOf(parent);
  AnswerEmpty(req, "rmdir", dir->id().ino, [&]() -> Status {
    KMSFS_ASSIGN_OR_RETURN(Encoded enc, EncryptName(dir, name));
    // The kernel holds the victim's inode lock across rmdir, and every create inside it goes
    // through us under that lock: nothing can appear between the check and the removal.
    KMSFS_ASSIGN_OR_RETURN(RemovedDirId removed, PrepareRemoveDir(dir, enc.backing_name));
    if (::unlinkat(dir->fd(), enc.backing_name.c_str(), AT_REMOVEDIR) != 0) {
      const int err = errno;
      RestoreDirId(removed);
      return SysError("rmdir", err);
    }
    RemoveSideFile(dir, enc);
    return Status::Ok();
  });
}

void Filesystem::Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
                        const char* new_name, unsigned int flags) {
  Inode* dir = InodeOf(parent);
  Inode* new_dir = InodeOf(new_parent);
  AnswerEmpty(req, "rename", dir->id().ino, [&]() -> Status {
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return Errno(EINVAL, "rename flags");
    const bool exchange = (flags & RENAME_EXCHANGE) != 0;
    KMSFS_ASSIGN_OR_RETURN(Encoded src, EncryptName(dir, name));
    // A move to another directory re-encrypts the name under the new parent's dir id; the
    // object itself (and a directory's own id and children) moves unchanged.
    KMSFS_ASSIGN_OR_RETURN(Encoded dst, EncryptName(new_dir, new_name));
    struct stat src_st;
    if (::fstatat(dir->fd(), src.backing_name.c_str(), &src_st, AT_SYMLINK_NOFOLLOW) != 0) {
      return SysError("rename: source", errno);
    }
    struct stat dst_st;
    const bool dst_exists =
        ::fstatat(new_dir->fd(), dst.backing_name.c_str(), &dst_st, AT_SYMLINK_NOFOLLOW) == 0;
    if (!dst_exists && errno != ENOENT) return SysError("rename: target", errno);
    if (exchange && !dst_exists) return Errno(ENOENT, "rename: exchange target");
    // Link tags (format.md §6.2): each regular file that gets a new name has that name's tag
    // added and synced before the backing rename, and loses the old name's tag after it, so a
    // crash leaves it readable under the old or the new name. Renaming a name onto another
    // link of the same file changes nothing (POSIX: both names stay).
    const bool same_file =
        dst_exists && dst_st.st_ino == src_st.st_ino && dst_st.st_dev == src_st.st_dev;
    const bool links = volume_->links_enabled() && !same_file;
    LinkName src_link, dst_link;
    std::unique_ptr<PosixBackingFile> src_header;  // the moved file, if regular
    std::unique_ptr<PosixBackingFile> dst_header;  // the exchanged or replaced file, if it matters
    bool src_added = false, dst_added = false;
    auto undo_tags = [&] {
      if (src_added) (void)UpdateLinks(src_header.get(), *volume_, nullptr, &dst_link, false);
      if (dst_added) (void)UpdateLinks(dst_header.get(), *volume_, nullptr, &src_link, false);
    };
    if (links) {
      KMSFS_ASSIGN_OR_RETURN(src_link.dir_id, DirIdOf(dir));
      src_link.backing_name = src.backing_name;
      KMSFS_ASSIGN_OR_RETURN(dst_link.dir_id, DirIdOf(new_dir));
      dst_link.backing_name = dst.backing_name;
      if (S_ISREG(src_st.st_mode)) {
        KMSFS_ASSIGN_OR_RETURN(src_header, OpenEntryForLinks(dir->fd(), src.backing_name));
        KMSFS_RETURN_IF_ERROR(UpdateLinks(src_header.get(), *volume_, &dst_link, nullptr,
                                          /*sync=*/true, format::FileHeader::kMaxLinkTags,
                                          &src_added));
      }
      // The target: with an exchange it moves to the source's name; when replaced it loses its
      // name, which matters only if it keeps others.
      if (dst_exists && S_ISREG(dst_st.st_mode) && (exchange || dst_st.st_nlink > 1)) {
        auto opened = OpenEntryForLinks(new_dir->fd(), dst.backing_name);
        if (!opened.ok()) {
          undo_tags();
          return opened.error();
        }
        dst_header = std::move(*opened);
        if (exchange) {
          Status st = UpdateLinks(dst_header.get(), *volume_, &src_link, nullptr, /*sync=*/true,
                                  format::FileHeader::kMaxLinkTags, &dst_added);
          if (!st.ok()) {
            undo_tags();
            return st;
          }
        }
      }
    }
    // Replacing an empty directory: the backing one still holds its kmsfs.dirid, which the
    // backing rename would call "not empty". Take it out first and put it back on failure.
    std::optional<RemovedDirId> replaced;
    if (dst_exists && !exchange && !(flags & RENAME_NOREPLACE) && S_ISDIR(dst_st.st_mode) &&
        S_ISDIR(src_st.st_mode) &&
        !(dst_st.st_ino == src_st.st_ino && dst_st.st_dev == src_st.st_dev)) {
      auto r = PrepareRemoveDir(new_dir, dst.backing_name);
      if (!r.ok()) {
        undo_tags();
        return r.error();
      }
      replaced.emplace(std::move(*r));
    }
    bool side_created = false;
    Status side = WriteSideFile(new_dir, dst, &side_created);
    if (!side.ok()) {
      if (replaced) RestoreDirId(*replaced);
      undo_tags();
      return side;
    }
    if (::renameat2(dir->fd(), src.backing_name.c_str(), new_dir->fd(), dst.backing_name.c_str(),
                    flags) != 0) {
      const int err = errno;
      if (side_created) RemoveSideFile(new_dir, dst);
      if (replaced) RestoreDirId(*replaced);
      undo_tags();
      return SysError("rename", err);
    }
    // The old name's side file goes once the old name is gone. It may not be: renaming a name
    // onto itself or onto another link of the same file is a successful no-op, and after an
    // exchange both names exist (each keeps its own side file).
    if (!exchange && !src.long_content.empty()) {
      struct stat st;
      if (::fstatat(dir->fd(), src.backing_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 &&
          errno == ENOENT) {
        RemoveSideFile(dir, src);
      }
    }
    if (Inode* moved = inodes_.Find({src_st.st_dev, src_st.st_ino})) {
      inodes_.Moved(moved, new_dir, new_name);
    }
    if (exchange) {
      if (Inode* other = inodes_.Find({dst_st.st_dev, dst_st.st_ino})) {
        inodes_.Moved(other, dir, name);
      }
    }
    if (links) {
      // Inodes first, tags second: an open that read the old link retries with the new one
      // (OpenKeyVia) if the old tag is gone by the time it reads the header.
      if (S_ISREG(src_st.st_mode)) {
        if (Inode* moved = inodes_.Find({src_st.st_dev, src_st.st_ino})) SetLink(moved, dst_link);
      }
      if (dst_exists && S_ISREG(dst_st.st_mode)) {
        if (Inode* other = inodes_.Find({dst_st.st_dev, dst_st.st_ino})) {
          std::lock_guard lock(other->mu);
          if (exchange) {
            other->link = src_link;
          } else if (other->link == dst_link) {
            other->link.reset();  // replaced: that name is the moved file's now
          }
        }
      }
      // No sync: a lost removal leaves a stale tag, which names an entry the file no longer has.
      if (src_header) {
        Status st = UpdateLinks(src_header.get(), *volume_, nullptr, &src_link, false);
        if (!st.ok())
          LogFailure("rename: remove the old link tag", uint64_t(src_st.st_ino), st.error());
      }
      if (dst_header) {
        Status st = UpdateLinks(dst_header.get(), *volume_, nullptr, &dst_link, false);
        if (!st.ok())
          LogFailure("rename: remove the old link tag", uint64_t(dst_st.st_ino), st.error());
      }
    }
    return Status::Ok();
  });
}

void Filesystem::ReadLink(fuse_req_t req, fuse_ino_t ino) {
  Inode* inode = InodeOf(ino);
  Answer(
      req, "readlink", inode->id().ino,
      [&]() -> Result<std::string> {
        char buf[PATH_MAX + 1];
        const ssize_t n = ::readlinkat(inode->fd(), "", buf, sizeof(buf));
        if (n < 0) return SysError("readlink", errno);
        return volume_->names().DecryptSymlink(std::string_view(buf, static_cast<size_t>(n)));
      },
      [](fuse_req_t r, const std::string& target) { fuse_reply_readlink(r, target.c_str()); });
}

}  // namespace kmsfs::fs
