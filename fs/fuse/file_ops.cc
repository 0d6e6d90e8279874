// Filesystem: file contents — create, open, read, write, truncate, fallocate, fsync, release.
// Every create asks keyd for a new data key and every open asks keyd to unwrap the file's key,
// with the caller's identity and the file's path; the key lives in the inode's OpenFile only
// while a handle is open.
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common/base/scope_exit.h"
#include "fs/fuse/filesystem.h"
#include "fs/fuse/kill_priv.h"
#include "fs/fuse/sys_util.h"

namespace kmsfs::fs {

// One open(2) of a regular file; fi->fh points at it from open/create until release.
struct Filesystem::FileHandle {
  Inode* inode;
  int flags;  // the open flags as the kernel gave them
  std::shared_ptr<Grant> grant;
  bool IsAppend() const { return (flags & O_APPEND) != 0; }
};

namespace {

// Read buffers are per worker thread and reused: a 1 MiB read allocates nothing after the first.
std::vector<uint8_t>& ReadBuffer(size_t size) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < size) buf.resize(size);
  return buf;
}

void SetOpenFlags(fuse_file_info* fi, int flags) {
  // O_DIRECT is honoured: the kernel then bypasses its page cache and sends every read and
  // write to us as issued (alignment is not required, every size works).
  fi->direct_io = (flags & O_DIRECT) != 0 ? 1 : 0;
  // No keep_cache: the page cache of a file is dropped at each open, so a reopen always reads
  // what is in the backing file now.
  fi->keep_cache = 0;
}

}  // namespace

Result<UniqueFd> Filesystem::ReopenBacking(Inode* inode, bool writable) {
  const ProcPath proc(inode->fd());
  UniqueFd fd(::open(proc.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC));
  if (!fd) return SysError("open backing file", errno);
  return fd;
}

Filesystem::FileHandle* Filesystem::NewHandle(fuse_req_t req, Inode* inode, int flags) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  auto grant = std::make_shared<Grant>();
  grant->inode = inode;
  grant->uid = ctx->uid;
  grant->gid = ctx->gid;
  grant->pid = ctx->pid;
  auto h = std::make_unique<FileHandle>(FileHandle{inode, flags, grant});
  std::lock_guard lock(grants_mu_);
  grants_.emplace(grant.get(), std::move(grant));
  handles_.insert(h.get());
  return h.release();
}

Filesystem::~Filesystem() {
  std::lock_guard lock(grants_mu_);
  for (FileHandle* h : handles_) delete h;
}

void Filesystem::DropGrant(const FileHandle& h) {
  if (h.grant->refused.load() != Code::kOk) --h.inode->refused_handles;
  std::lock_guard lock(grants_mu_);
  grants_.erase(h.grant.get());
  handles_.erase(const_cast<FileHandle*>(&h));
}

Result<FileContent*> Filesystem::ContentFor(const FileHandle& h) {
  const Code refused = h.grant->refused.load(std::memory_order_acquire);
  if (refused != Code::kOk) {
    return Error(refused, "keyd no longer grants this open file's key to its opener");
  }
  return h.inode->open_file->Content();
}

Result<Filesystem::FileHandle*> Filesystem::OpenHandle(fuse_req_t req, Inode* inode, int flags,
                                                       bool kill_suid_gid) {
  if (!inode->is_reg()) return Errno(EISDIR, "open: not a regular file");
  const bool wants_write = (flags & O_ACCMODE) != O_RDONLY;
  // Read-write whenever the mount may (writes are read-modify-write of blocks, so even an
  // O_WRONLY open needs to read); read-only only for read-only opens of files the mounting
  // user may not write (a non-root mount).
  bool writable = true;
  auto fd = ReopenBacking(inode, true);
  if (!fd.ok() && !wants_write &&
      (fd.error().sys_errno() == EACCES || fd.error().sys_errno() == EROFS ||
       fd.error().sys_errno() == EPERM)) {
    writable = false;
    fd = ReopenBacking(inode, false);
  }
  if (!fd.ok()) return fd.error();
  auto backing = std::make_unique<PosixBackingFile>(std::move(*fd));
  // Every open asks keyd, even when another handle already holds the key: the policy decides
  // for this caller and this path, and a DisableKey or policy change applies to the very next
  // open. When keyd is down this fails after the client's bounded timeout (EHOSTDOWN).
  const Requester who = Who(req, inodes_.PathOf(inode));
  KMSFS_ASSIGN_OR_RETURN(FileKey key, OpenKeyVia(backing.get(), inode, who));

  std::unique_lock io(inode->io_mu);
  {
    std::lock_guard lock(inode->mu);
    if (inode->open_file && !inode->open_file->SameKey(key)) {
      // Same inode, different header: the backing file was rewritten behind our back.
      return Error(Code::kCorrupt, "file header changed while the file is open");
    }
    if (!inode->open_file || (wants_write && !inode->writable)) {
      KMSFS_ASSIGN_OR_RETURN(auto file,
                             OpenFile::Create(volume_->id(), std::move(backing), std::move(key)));
      // An upgrade replaces a read-only state; its key is wiped as it goes. Nobody is inside
      // it: we hold io_mu exclusively.
      inode->open_file = std::move(file);
      inode->writable = writable;
    } else if (!inode->open_file->has_key()) {
      // Every other handle lost access at a revalidation and the DEK was wiped; this open was
      // just granted by keyd, so the state gets the key back (the refused handles stay refused).
      KMSFS_RETURN_IF_ERROR(inode->open_file->RestoreKey(std::move(key)));
    }
    ++inode->open_count;
  }
  if ((flags & O_TRUNC) && wants_write) {
    Status st = inode->open_file->content().Truncate(0);
    if (st.ok() && kill_suid_gid) st = KillSuidGid(inode);
    if (!st.ok()) {
      std::lock_guard lock(inode->mu);
      if (--inode->open_count == 0) {
        inode->open_file.reset();
        inode->refused_handles = 0;
      }
      return st.error();
    }
  }
  std::lock_guard lock(inode->mu);
  return NewHandle(req, inode, flags);
}

void Filesystem::Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Inode* inode = InodeOf(ino);
  std::call_once(first_open_, [this] {
    if (first_open_hook_) first_open_hook_();
  });
  const bool kill = CurrentRequestKillsSuidGid();
  Answer(
      req, "open", inode->id().ino, [&]() { return OpenHandle(req, inode, fi->flags, kill); },
      [fi](fuse_req_t r, FileHandle* h) {
        fi->fh = reinterpret_cast<uint64_t>(h);
        SetOpenFlags(fi, h->flags);
        fuse_reply_open(r, fi);
      });
}

void Filesystem::Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                        fuse_file_info* fi) {
  Inode* dir = InodeOf(parent);
  const bool kill = CurrentRequestKillsSuidGid();
  struct Created {
    fuse_entry_param entry;
    FileHandle* handle;
  };
  Answer(
      req, "create", dir->id().ino,
      [&]() -> Result<Created> {
        KMSFS_ASSIGN_OR_RETURN(Encoded enc, EncryptName(dir, name));
        auto state = CreateRegular(req, dir, name, enc, mode);
        if (!state.ok()) {
          // The kernel calls create only after a negative lookup, so an existing name means we
          // lost a race with another creator. Without O_EXCL that is an ordinary open.
          if (state.error().code() != Code::kAlreadyExists || (fi->flags & O_EXCL)) {
            return state.error();
          }
          KMSFS_ASSIGN_OR_RETURN(fuse_entry_param e, LookupBacking(dir, enc.backing_name, name));
          auto h = OpenHandle(req, InodeOf(e.ino), fi->flags & ~(O_CREAT | O_EXCL), kill);
          if (!h.ok()) {
            inodes_.Forget(InodeOf(e.ino), 1);
            return h.error();
          }
          return Created{e, *h};
        }
        KMSFS_ASSIGN_OR_RETURN(fuse_entry_param e, LookupBacking(dir, enc.backing_name, name));
        Inode* inode = InodeOf(e.ino);
        {
          std::unique_lock io(inode->io_mu);
          std::lock_guard lock(inode->mu);
          if (!inode->open_file) {
            inode->open_file = std::move(*state);
            inode->writable = true;
          }
          ++inode->open_count;
          return Created{e, NewHandle(req, inode, fi->flags)};
        }
      },
      [fi](fuse_req_t r, const Created& c) {
        fi->fh = reinterpret_cast<uint64_t>(c.handle);
        SetOpenFlags(fi, c.handle->flags);
        fuse_reply_create(r, &c.entry, fi);
      });
}

void Filesystem::Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Inode* inode = InodeOf(ino);
  const auto* h = FromFh<FileHandle>(fi->fh);
  std::vector<uint8_t>* buf = nullptr;
  Answer(
      req, "read", inode->id().ino,
      [&]() -> Result<size_t> {
        if (off < 0) return Errno(EINVAL, "read: negative offset");
        buf = &ReadBuffer(size);
        std::shared_lock io(inode->io_mu);
        KMSFS_ASSIGN_OR_RETURN(FileContent * content, ContentFor(*h));
        // FileContent zeroes the buffer when a block fails authentication: no plaintext of a
        // failed read is ever sent.
        return content->Read(std::span<uint8_t>(buf->data(), size), static_cast<uint64_t>(off));
      },
      [&buf](fuse_req_t r, size_t n) {
        fuse_reply_buf(r, reinterpret_cast<const char*>(buf->data()), n);
      });
}

void Filesystem::Write(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off,
                       fuse_file_info* fi) {
  Inode* inode = InodeOf(ino);
  auto* h = FromFh<FileHandle>(fi->fh);
  const bool kill = CurrentRequestKillsSuidGid();
  Answer(
      req, "write", inode->id().ino,
      [&]() -> Result<size_t> {
        if (off < 0) return Errno(EINVAL, "write: negative offset");
        // Before the data, as Linux's file_remove_privs.
        if (kill) KMSFS_RETURN_IF_ERROR(KillSuidGid(inode));
        const ByteSpan bytes(reinterpret_cast<const uint8_t*>(data), size);
        // writepage requests (mmap) carry a page offset and may borrow any writable handle,
        // O_APPEND ones included: they are never appends.
        if (h->IsAppend() && !fi->writepage) {
          // O_APPEND: find the end and write there as one step, so two appenders (two
          // processes, two handles) never overwrite each other.
          std::unique_lock io(inode->io_mu);
          if (!inode->writable) return Errno(EBADF, "write: read-only state");
          KMSFS_ASSIGN_OR_RETURN(FileContent * content, ContentFor(*h));
          KMSFS_ASSIGN_OR_RETURN(uint64_t end, content->Size());
          KMSFS_RETURN_IF_ERROR(content->Write(bytes, end));
          return size;
        }
        std::shared_lock io(inode->io_mu);
        if (!inode->writable) return Errno(EBADF, "write: read-only state");
        KMSFS_ASSIGN_OR_RETURN(FileContent * content, ContentFor(*h));
        // All of it or an error: FileContent never writes short.
        KMSFS_RETURN_IF_ERROR(content->Write(bytes, static_cast<uint64_t>(off)));
        return size;
      },
      [](fuse_req_t r, size_t n) { fuse_reply_write(r, n); });
}

Status Filesystem::Truncate(fuse_req_t req, Inode* inode, uint64_t size, fuse_file_info* fi) {
  if (!inode->is_reg()) return Errno(EINVAL, "truncate: not a regular file");
  if (fi != nullptr) {
    // ftruncate(fd): the handle's open already got the key for this caller.
    std::shared_lock io(inode->io_mu);
    if (!inode->open_file || !inode->writable) return Errno(EBADF, "truncate");
    KMSFS_ASSIGN_OR_RETURN(FileContent * content, ContentFor(*FromFh<FileHandle>(fi->fh)));
    return content->Truncate(size);
  }
  // truncate(path): a key use like an open, so keyd decides for this caller and path.
  KMSFS_ASSIGN_OR_RETURN(UniqueFd fd, ReopenBacking(inode, true));
  auto backing = std::make_unique<PosixBackingFile>(std::move(fd));
  const Requester who = Who(req, inodes_.PathOf(inode));
  KMSFS_ASSIGN_OR_RETURN(FileKey key, OpenKeyVia(backing.get(), inode, who));
  // Exclusive: no handle may be installed or write while a second FileContent works on the
  // file; when one exists already, the truncate goes through it.
  std::unique_lock io(inode->io_mu);
  if (inode->open_file && inode->writable) {
    // This call was just granted by keyd: a wiped state gets the key back.
    KMSFS_RETURN_IF_ERROR(inode->open_file->RestoreKey(std::move(key)));
    return inode->open_file->content().Truncate(size);
  }
  KMSFS_ASSIGN_OR_RETURN(auto file,
                         OpenFile::Create(volume_->id(), std::move(backing), std::move(key)));
  Status truncated = file->content().Truncate(size);
  // A read-only open state of the file (a non-root mount) saw the old size: it must look again.
  if (inode->open_file && inode->open_file->has_key()) {
    inode->open_file->content().ForgetBackingSize();
  }
  return truncated;
}

void Filesystem::FAllocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                           fuse_file_info* fi) {
  Inode* inode = InodeOf(ino);
  const auto* h = FromFh<FileHandle>(fi->fh);
  AnswerEmpty(req, "fallocate", inode->id().ino, [&]() -> Status {
    // Mode 0 only: the file grows to offset+length with authenticated holes. Real
    // preallocation would need encrypted zeros, and punching or collapsing would need block
    // rewrites and new FINAL marks: EOPNOTSUPP, as for file systems without them.
    if (mode != 0) return Error(Code::kFailedPrecondition, "fallocate mode", EOPNOTSUPP);
    if (offset < 0 || length <= 0) return Errno(EINVAL, "fallocate range");
    const uint64_t end = static_cast<uint64_t>(offset) + static_cast<uint64_t>(length);
    std::unique_lock io(inode->io_mu);
    if (!inode->open_file || !inode->writable) return Errno(EBADF, "fallocate");
    KMSFS_ASSIGN_OR_RETURN(FileContent * content, ContentFor(*h));
    KMSFS_ASSIGN_OR_RETURN(uint64_t size, content->Size());
    // The kernel sends no flag for fallocate under FUSE_HANDLE_KILLPRIV_V2, though Linux clears
    // set-id bits here too (file_modified): the caller's own capabilities decide.
    KMSFS_RETURN_IF_ERROR(KillSuidGid(inode, fuse_req_ctx(req)->pid));
    if (end <= size) return Status::Ok();
    return content->Truncate(end);
  });
}

namespace {

// Whether process `pid` has CAP_FSETID in its effective set, as the kernel's capable() sees it:
// false if that cannot be read (it has exited, /proc hides it, or kmsfs may not read its
// namespace link) or if it lives in another user namespace (its CapEff counts there only),
// which errs on the side of clearing.
bool HasCapFsetid(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::error_code ec;
  const auto ns = std::filesystem::read_symlink(proc + "/ns/user", ec);
  if (ec || ns != std::filesystem::read_symlink("/proc/self/ns/user", ec) || ec) return false;
  std::ifstream status(proc + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (!line.starts_with("CapEff:")) continue;
    const uint64_t caps = std::strtoull(line.c_str() + 7, nullptr, 16);
    return (caps & (uint64_t{1} << CAP_FSETID)) != 0;
  }
  return false;
}

}  // namespace

Status Filesystem::KillSuidGid(Inode* inode, pid_t unless_capable) {
  {
    // Read, then written back: under mode_mu, so a chmod or chown through this mount cannot
    // come in between (the kernel does not serialize an O_TRUNC open with them).
    std::lock_guard lock(inode->mode_mu);
    struct stat st;
    if (::fstatat(inode->fd(), "", &st, AT_EMPTY_PATH) != 0) return SysError("stat", errno);
    const mode_t mode = st.st_mode & 07777;
    mode_t kept = mode & ~S_ISUID;
    if ((kept & S_IXGRP) != 0) kept &= ~S_ISGID;
    if (kept == mode) return Status::Ok();
    if (unless_capable != 0 && HasCapFsetid(unless_capable)) return Status::Ok();
    const ProcPath proc(inode->fd());
    if (::chmod(proc.c_str(), kept) != 0) return SysError("chmod: clear set-id bits", errno);
  }
  // Before the caller's data lands: the kernel's cached mode must not outlive the change.
  if (attr_changed_hook_) attr_changed_hook_(FuseIno(inode));  // a regular file: never the root
  return Status::Ok();
}

void Filesystem::Flush(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* /*fi*/) {
  // Nothing is buffered here: every write reached the backing file before it was answered.
  fuse_reply_err(req, 0);
}

void Filesystem::FSync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* /*fi*/) {
  Inode* inode = InodeOf(ino);
  AnswerEmpty(req, "fsync", inode->id().ino, [&]() -> Status {
    std::shared_lock io(inode->io_mu);
    if (!inode->open_file) return Errno(EBADF, "fsync");
    // Data pages and their metadata entries are in the same backing file: one fsync makes a
    // block and its tag durable together (format.md §7.6).
    return inode->open_file->backing().Sync(datasync != 0);
  });
}

void Filesystem::Release(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  std::unique_ptr<FileHandle> h(FromFh<FileHandle>(fi->fh));
  Inode* inode = h->inode;
  {
    std::unique_lock io(inode->io_mu);
    std::lock_guard lock(inode->mu);
    DropGrant(*h);
    // The last close drops the open state: FileContent's key schedule and the DEK are wiped.
    if (--inode->open_count == 0) {
      inode->open_file.reset();
      inode->writable = false;
      inode->refused_handles = 0;
    } else if (inode->refused_handles == inode->open_count && inode->open_file) {
      // Only refused handles are left: none of them may use the key.
      inode->open_file->WipeKey();
    }
  }
  fuse_reply_err(req, 0);
}

}  // namespace kmsfs::fs
