// Filesystem: construction, names, lookup/forget and attributes. Entry operations are in
// entry_ops.cc, file contents in file_ops.cc, directories in dir_ops.cc, xattrs in xattr_ops.cc.
#include "fs/fuse/filesystem.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <shared_mutex>

#include "common/format/block_layout.h"
#include "common/format/name_encoding.h"
#include "common/ipc/message.h"
#include "common/log/log.h"
#include "fs/core/dir_id.h"
#include "fs/fuse/sys_util.h"

namespace kmsfs::fs {

Result<std::unique_ptr<Filesystem>> Filesystem::Create(UniqueFd root_fd, Volume* volume,
                                                       DataKeySource* keys,
                                                       const FilesystemOptions& options) {
  struct stat st;
  if (::fstatat(root_fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    return SysError("stat cipher directory", errno);
  }
  if (!S_ISDIR(st.st_mode)) return Errno(ENOTDIR, "cipher directory");
  std::unique_ptr<Filesystem> fs(new Filesystem(std::move(root_fd), st, volume, keys, options));
  // Volume::Open has read (and checked) the root's dir id already.
  Inode* root = fs->inodes_.root();
  std::lock_guard lock(root->mu);
  root->dir_id = volume->root_dir_id();
  return fs;
}

Filesystem::Filesystem(UniqueFd root_fd, const struct stat& root_st, Volume* volume,
                       DataKeySource* keys, const FilesystemOptions& options)
    : volume_(volume),
      keys_(keys),
      options_(options),
      root_dev_(root_st.st_dev),
      as_root_(::geteuid() == 0),
      long_names_(volume->names().long_names()),
      inodes_(std::move(root_fd), root_st) {}

Inode* Filesystem::InodeOf(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return inodes_.root();
  return FromFh<Inode>(ino);
}

fuse_ino_t Filesystem::FuseIno(Inode* inode) { return reinterpret_cast<fuse_ino_t>(inode); }

Requester Filesystem::Who(fuse_req_t req, const std::string& path) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Requester who;
  who.uid = ctx->uid;
  who.gid = ctx->gid;
  who.pid = ctx->pid;
  // keyd's policies match UTF-8 text; a name that is not UTF-8 reaches keyd with U+FFFD in
  // place of its bad bytes (docs/protocol.md), and only wildcard patterns can match it.
  who.path = ipc::ToWirePath(path);
  return who;
}

void Filesystem::Init(fuse_conn_info* conn) {
  // Large requests: FileContent works in 4 KiB blocks, but one 1 MiB request costs one
  // round trip and one lock acquisition instead of 256.
  conn->max_write = 1u << 20;
  conn->max_read = 1u << 20;  // must match the max_read mount option (mount.cc sets it)
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  // O_TRUNC arrives with open() instead of as a separate SETATTR: one key request per open.
  if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  // Splice moves pages between the kernel and our buffers, but every byte is encrypted or
  // decrypted in user space anyway: nothing to gain, and one code path less.
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  // Writeback cache stays off: with it the kernel owns i_size and turns O_APPEND writes into
  // writes at its own idea of the end, which we could not serialize against other writers.
  // A later measurement decides whether to enable it with those semantics proven.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // Locks are left to the kernel (no getlk/setlk/flock ops): a local mount needs nothing else.
  conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
  conn->want &= ~FUSE_CAP_EXPORT_SUPPORT;
  // Not the first HANDLE_KILLPRIV, which libfuse asks for by default: with it the kernel
  // leaves set-id bits to us but sends no flag on most writes. kmsfs clears them under
  // HANDLE_KILLPRIV_V2 (kill_priv.h); where that is not negotiated, the kernel does.
  conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
}

// ---------------------------------------------------------------------------------------------
// Names

Result<format::Id128> Filesystem::DirIdOf(Inode* dir) {
  if (!dir->is_dir()) return Errno(ENOTDIR, "directory id");
  {
    std::lock_guard lock(dir->mu);
    if (dir->dir_id) return *dir->dir_id;
  }
  // A missing kmsfs.dirid is kCorrupt (EIO) here, not ENOENT: the directory is damaged.
  KMSFS_ASSIGN_OR_RETURN(format::Id128 id, ReadDirId(dir->fd()));
  std::lock_guard lock(dir->mu);
  dir->dir_id = id;
  return id;
}

Result<Filesystem::Encoded> Filesystem::EncryptName(Inode* parent, std::string_view name) {
  // The FUSE kernel module allows names up to 1024 bytes; POSIX and every backing fs stop at
  // NAME_MAX, so do we.
  if (name.size() > format::kMaxNameLen) {
    return Error(Code::kInvalidArgument, "name longer than 255 bytes", ENAMETOOLONG);
  }
  KMSFS_ASSIGN_OR_RETURN(format::Id128 dir_id, DirIdOf(parent));
  KMSFS_ASSIGN_OR_RETURN(Encoded enc, volume_->names().EncryptName(dir_id, name));
  if (!enc.long_content.empty() && !long_names_) {
    return Error(Code::kInvalidArgument, "name too long for a volume without long-names",
                 ENAMETOOLONG);
  }
  return enc;
}

Status Filesystem::WriteSideFile(Inode* parent, const Encoded& enc, bool* created) {
  *created = false;
  if (enc.long_content.empty()) return Status::Ok();
  const std::string side = format::LongNameSideFile(enc.backing_name);
  int fd = ::openat(parent->fd(), side.c_str(),
                    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0 && errno == EEXIST) {
    // Names are deterministic, so an existing side file for this name normally holds exactly
    // this encoding already (the entry exists, or a crash left it). Rewrite only if it differs.
    UniqueFd in(::openat(parent->fd(), side.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (in) {
      std::string have(enc.long_content.size() + 1, '\0');
      const ssize_t n = ::pread(in.get(), have.data(), have.size(), 0);
      if (n == static_cast<ssize_t>(enc.long_content.size()) &&
          have.compare(0, n, enc.long_content) == 0) {
        return Status::Ok();
      }
    }
    fd = ::openat(parent->fd(), side.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
  } else if (fd >= 0) {
    *created = true;
  }
  if (fd < 0) return SysError("create long-name side file", errno);
  UniqueFd out(fd);
  size_t done = 0;
  while (done < enc.long_content.size()) {
    const ssize_t n = ::pwrite(out.get(), enc.long_content.data() + done,
                               enc.long_content.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      if (*created) ::unlinkat(parent->fd(), side.c_str(), 0);
      *created = false;
      return SysError("write long-name side file", err);
    }
    done += static_cast<size_t>(n);
  }
  // Durable before the entry that needs it exists (format.md §8.3).
  if (::fsync(out.get()) != 0) {
    const int err = errno;
    if (*created) ::unlinkat(parent->fd(), side.c_str(), 0);
    *created = false;
    return SysError("fsync long-name side file", err);
  }
  return Status::Ok();
}

void Filesystem::RemoveSideFile(Inode* parent, const Encoded& enc) {
  if (enc.long_content.empty()) return;
  const std::string side = format::LongNameSideFile(enc.backing_name);
  // Best effort: an orphaned side file is harmless (readdir skips it, rmdir cleans it up).
  ::unlinkat(parent->fd(), side.c_str(), 0);
}

Result<std::string> Filesystem::DecryptEntryName(int dir_fd, const format::Id128& dir_id,
                                                 std::string_view backing_name) {
  std::string long_content;
  if (backing_name.starts_with(format::kLongNamePrefix)) {
    const std::string side = format::LongNameSideFile(backing_name);
    UniqueFd in(::openat(dir_fd, side.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!in) return Error(Code::kCorrupt, "long name without its side file");
    long_content.resize(1024);  // an encoded name is at most 362 bytes
    const ssize_t n = ::pread(in.get(), long_content.data(), long_content.size(), 0);
    if (n < 0) return SysError("read long-name side file", errno);
    long_content.resize(static_cast<size_t>(n));
  }
  return volume_->names().DecryptName(dir_id, backing_name, long_content);
}

// ---------------------------------------------------------------------------------------------
// Lookup, forget, attributes

Result<fuse_entry_param> Filesystem::LookupBacking(Inode* parent, const std::string& backing_name,
                                                   std::string plain_name) {
  UniqueFd fd(::openat(parent->fd(), backing_name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return SysError("lookup", errno);
  struct stat st;
  if (::fstatat(fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    return SysError("lookup: stat", errno);
  }
  if (st.st_dev != root_dev_) {
    // Another file system mounted inside the backing tree has no dir ids or headers; kmsfs
    // does not serve it (passthrough_hp hides such mount points the same way).
    return Error(Code::kFailedPrecondition, "mount point inside the backing directory");
  }
  Inode* inode = inodes_.Remember(std::move(fd), st, parent, std::move(plain_name));
  if (S_ISREG(st.st_mode) && volume_->links_enabled()) {
    // The entry an open will be checked against (format.md §6.2); the dir id is cached.
    if (auto dir_id = DirIdOf(parent); dir_id.ok()) SetLink(inode, LinkName{*dir_id, backing_name});
  }
  fuse_entry_param e{};
  e.ino = FuseIno(inode);
  e.attr_timeout = options_.timeout;
  e.entry_timeout = options_.timeout;
  Status fixed = FixupAttr(inode, inode->fd(), &st);
  if (!fixed.ok()) {
    // The entry exists even if its size or target cannot be trusted: answering the lookup
    // keeps it removable (unlink needs a lookup). getattr reports the damage as EIO, so the
    // attributes are not cached (and getattr logs the one line).
    st.st_size = 0;
    e.attr_timeout = 0;
  }
  e.attr = st;
  return e;
}

Status Filesystem::FixupAttr(Inode* inode, int fd, struct stat* st) {
  if (S_ISREG(st->st_mode)) {
    {
      std::shared_lock io(inode->io_mu);
      // A state whose key was revoked falls through to the backing size (same result).
      if (inode->open_file && inode->open_file->has_key()) {
        KMSFS_ASSIGN_OR_RETURN(uint64_t size, inode->open_file->content().Size());
        st->st_size = static_cast<off_t>(size);
        return Status::Ok();
      }
    }
    KMSFS_ASSIGN_OR_RETURN(uint64_t size,
                           format::PlaintextSizeForBackingSize(static_cast<uint64_t>(st->st_size)));
    st->st_size = static_cast<off_t>(size);
  } else if (S_ISLNK(st->st_mode)) {
    char buf[PATH_MAX + 1];
    const ssize_t n = ::readlinkat(fd, "", buf, sizeof(buf));
    if (n < 0) return SysError("readlink", errno);
    KMSFS_ASSIGN_OR_RETURN(std::string target,
                           volume_->names().DecryptSymlink(std::string_view(buf, size_t(n))));
    st->st_size = static_cast<off_t>(target.size());
    crypto::Wipe(target);
  }
  return Status::Ok();
}

Result<struct stat> Filesystem::Stat(Inode* inode) {
  struct stat st;
  if (::fstatat(inode->fd(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    return SysError("stat", errno);
  }
  KMSFS_RETURN_IF_ERROR(FixupAttr(inode, inode->fd(), &st));
  return st;
}

void Filesystem::Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Inode* dir = InodeOf(parent);
  Answer(
      req, "lookup", dir->id().ino,
      [&]() -> Result<fuse_entry_param> {
        KMSFS_ASSIGN_OR_RETURN(Encoded enc, EncryptName(dir, name));
        auto e = LookupBacking(dir, enc.backing_name, name);
        if (!e.ok() && e.error().code() == Code::kNotFound) {
          // A negative entry: the kernel caches "no such name" for the entry timeout. Every
          // create goes through this mount, so the cache cannot go stale behind our back.
          fuse_entry_param negative{};
          negative.entry_timeout = options_.timeout;
          return negative;
        }
        return e;
      },
      [](fuse_req_t r, const fuse_entry_param& e) { fuse_reply_entry(r, &e); });
}

void Filesystem::Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  inodes_.Forget(InodeOf(ino), nlookup);
  fuse_reply_none(req);
}

void Filesystem::ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) inodes_.Forget(InodeOf(forgets[i].ino), forgets[i].nlookup);
  fuse_reply_none(req);
}

void Filesystem::GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* /*fi*/) {
  Inode* inode = InodeOf(ino);
  Answer(
      req, "getattr", inode->id().ino, [&]() { return Stat(inode); },
      [this](fuse_req_t r, const struct stat& st) { fuse_reply_attr(r, &st, options_.timeout); });
}

void Filesystem::SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid,
                         fuse_file_info* fi) {
  Inode* inode = InodeOf(ino);
  Answer(
      req, "setattr", inode->id().ino,
      [&]() -> Result<struct stat> {
        const ProcPath proc(inode->fd());
        if (valid & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
          std::lock_guard lock(inode->mode_mu);  // see KillSuidGid
          if (valid & FUSE_SET_ATTR_MODE) {
            if (::chmod(proc.c_str(), attr->st_mode & 07777) != 0) {
              return SysError("chmod", errno);
            }
          }
          if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
            const uid_t uid =
                (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
            const gid_t gid =
                (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
            if (::fchownat(inode->fd(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
              return SysError("chown", errno);
            }
          }
        }
        if (valid & FUSE_SET_ATTR_SIZE) {
          if (attr->st_size < 0) return Errno(EINVAL, "truncate: negative size");
          KMSFS_RETURN_IF_ERROR(Truncate(req, inode, static_cast<uint64_t>(attr->st_size), fi));
        }
        // FATTR_KILL_SUIDGID (kill_priv.h): a truncate by a caller without CAP_FSETID.
        if ((valid & FUSE_SET_ATTR_KILL_SUID) != 0 && (valid & FUSE_SET_ATTR_MODE) == 0) {
          KMSFS_RETURN_IF_ERROR(KillSuidGid(inode));
        }
        // Times last: a truncate above sets mtime itself.
        if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
          struct timespec tv[2];
          tv[0].tv_sec = tv[1].tv_sec = 0;
          tv[0].tv_nsec = tv[1].tv_nsec = UTIME_OMIT;
          if (valid & FUSE_SET_ATTR_ATIME_NOW) {
            tv[0].tv_nsec = UTIME_NOW;
          } else if (valid & FUSE_SET_ATTR_ATIME) {
            tv[0] = attr->st_atim;
          }
          if (valid & FUSE_SET_ATTR_MTIME_NOW) {
            tv[1].tv_nsec = UTIME_NOW;
          } else if (valid & FUSE_SET_ATTR_MTIME) {
            tv[1] = attr->st_mtim;
          }
          // Through /proc/self/fd the magic link lands on the object itself, even a symlink.
          if (::utimensat(AT_FDCWD, proc.c_str(), tv, 0) != 0) return SysError("utimens", errno);
        }
        return Stat(inode);
      },
      [this](fuse_req_t r, const struct stat& st) { fuse_reply_attr(r, &st, options_.timeout); });
}

void Filesystem::StatFs(fuse_req_t req, fuse_ino_t ino) {
  Inode* inode = InodeOf(ino);
  Answer(
      req, "statfs", inode->id().ino,
      [&]() -> Result<struct statvfs> {
        struct statvfs sv;
        if (::fstatvfs(inodes_.root()->fd(), &sv) != 0) return SysError("statfs", errno);
        // Plaintext names up to 255 bytes fit when long names are on; without them the
        // encoding must fit in 255 bytes itself (175 plaintext bytes, format.md §8.3).
        sv.f_namemax = long_names_ ? format::kMaxNameLen : 175;
        return sv;
      },
      [](fuse_req_t r, const struct statvfs& sv) { fuse_reply_statfs(r, &sv); });
}

}  // namespace kmsfs::fs
