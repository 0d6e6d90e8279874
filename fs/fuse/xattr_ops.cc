// Filesystem: extended attributes. Values are encrypted (NameCodec::EncryptXattr: AES-256-GCM
// under the volume's xattr key, AAD = the file's id and the attribute name); names are stored
// as they are.
//
// What leaks (docs/threat-model.md A1): attribute *names* and the value lengths (+28 bytes) are
// visible in the backing directory, as the backing file system stores them. Names are left in
// clear so that the backing namespace rules (user.* only on regular files and directories,
// trusted.* for CAP_SYS_ADMIN) keep applying and listxattr needs no decryption.
// Namespaces: user.* for everyone (the kernel checks the file's mode first); trusted.* and
// security.* only for root callers; system.* (POSIX ACLs) and anything else: EOPNOTSUPP.
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "common/format/file_header.h"
#include "fs/fuse/filesystem.h"
#include "fs/fuse/sys_util.h"

namespace kmsfs::fs {
namespace {

enum class Namespace { kUser, kPrivileged, kUnsupported };

// File capabilities (capabilities(7)); see Inode::caps_state.
constexpr std::string_view kCapsName = "security.capability";

Namespace NamespaceOf(std::string_view name) {
  if (name.starts_with("user.")) return Namespace::kUser;
  if (name.starts_with("trusted.") || name.starts_with("security.")) return Namespace::kPrivileged;
  return Namespace::kUnsupported;
}

}  // namespace

Status Filesystem::CheckXattrName(fuse_req_t req, std::string_view name, bool for_write) {
  switch (NamespaceOf(name)) {
    case Namespace::kUser:
      return Status::Ok();
    case Namespace::kPrivileged:
      if (fuse_req_ctx(req)->uid == 0) return Status::Ok();
      return for_write ? Errno(EPERM, "xattr namespace") : Errno(ENODATA, "xattr namespace");
    case Namespace::kUnsupported:
      break;
  }
  return Error(Code::kFailedPrecondition, "xattr namespace not supported", EOPNOTSUPP);
}

Result<format::Id128> Filesystem::XattrIdOf(Inode* inode) {
  if (inode->is_dir()) return DirIdOf(inode);
  if (!inode->is_reg()) return Errno(EPERM, "xattr on a special file");
  {
    std::lock_guard lock(inode->mu);
    if (inode->file_id) return *inode->file_id;
  }
  // The file id in the header, read without keys: unauthenticated, which is fine for an AAD —
  // a changed id makes every value fail to decrypt (EIO), never decrypt wrongly.
  KMSFS_ASSIGN_OR_RETURN(UniqueFd fd, ReopenBacking(inode, false));
  PosixBackingFile backing(std::move(fd));
  Bytes page(format::FileHeader::kSize);
  KMSFS_ASSIGN_OR_RETURN(size_t n, backing.PRead(page, 0));
  if (n != page.size()) return Error(Code::kCorrupt, "file shorter than its header");
  KMSFS_ASSIGN_OR_RETURN(format::FileHeader header, format::ParseFileHeader(page));
  const format::Id128 id = header.file_id;
  std::lock_guard lock(inode->mu);
  inode->file_id = id;
  return id;
}

void Filesystem::SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                          size_t size, int flags) {
  Inode* inode = InodeOf(ino);
  AnswerEmpty(req, "setxattr", inode->id().ino, [&]() -> Status {
    KMSFS_RETURN_IF_ERROR(CheckXattrName(req, name, /*for_write=*/true));
    KMSFS_ASSIGN_OR_RETURN(format::Id128 id, XattrIdOf(inode));
    KMSFS_ASSIGN_OR_RETURN(Bytes stored,
                           volume_->names().EncryptXattr(
                               id, name, ByteSpan(reinterpret_cast<const uint8_t*>(value), size)));
    const ProcPath proc(inode->fd());
    const int rc = ::setxattr(proc.c_str(), name, stored.data(), stored.size(), flags);
    const int err = errno;
    // After the change (whatever its outcome), in one step: forget "no security.capability"
    // and count the change, so a getxattr that looked before it cannot set the bit again.
    uint32_t state = inode->caps_state.load(std::memory_order_acquire);
    while (!inode->caps_state.compare_exchange_weak(state, (state + 2) & ~Inode::kNoCaps,
                                                    std::memory_order_acq_rel)) {
    }
    if (rc != 0) return SysError("setxattr", err);
    return Status::Ok();
  });
}

void Filesystem::GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Inode* inode = InodeOf(ino);
  // The kernel's question before every write(2): answered from what we know, without touching
  // the backing file (one syscall through /proc/self/fd and an error path less per write).
  // Non-root callers get ENODATA for security.* anyway (CheckXattrName).
  const bool caps = std::string_view(name) == kCapsName;
  const uint32_t caps_seen = inode->caps_state.load(std::memory_order_acquire);
  if (caps && ((caps_seen & Inode::kNoCaps) != 0 || fuse_req_ctx(req)->uid != 0)) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  Answer(
      req, "getxattr", inode->id().ino,
      [&]() -> Result<Bytes> {
        KMSFS_RETURN_IF_ERROR(CheckXattrName(req, name, /*for_write=*/false));
        if (!inode->is_dir() && !inode->is_reg()) return Errno(ENODATA, "getxattr");
        const ProcPath proc(inode->fd());
        Bytes stored;
        while (true) {
          const ssize_t n = ::getxattr(proc.c_str(), name, nullptr, 0);
          if (n < 0 && errno == ENODATA && caps) {
            // Known absent from now on, unless a setxattr finished since caps_seen was read.
            uint32_t expected = caps_seen;
            inode->caps_state.compare_exchange_strong(expected, caps_seen | Inode::kNoCaps,
                                                      std::memory_order_acq_rel);
            errno = ENODATA;
          }
          if (n < 0) return SysError("getxattr", errno);
          stored.resize(static_cast<size_t>(n));
          const ssize_t m = ::getxattr(proc.c_str(), name, stored.data(), stored.size());
          if (m >= 0) {
            stored.resize(static_cast<size_t>(m));
            break;
          }
          if (errno != ERANGE) return SysError("getxattr", errno);  // ERANGE: it grew; again
        }
        KMSFS_ASSIGN_OR_RETURN(format::Id128 id, XattrIdOf(inode));
        KMSFS_ASSIGN_OR_RETURN(Bytes value, volume_->names().DecryptXattr(id, name, stored));
        if (size != 0 && size < value.size()) return Errno(ERANGE, "getxattr: buffer");
        return value;
      },
      [size](fuse_req_t r, const Bytes& value) {
        if (size == 0) {
          fuse_reply_xattr(r, value.size());
        } else {
          fuse_reply_buf(r, reinterpret_cast<const char*>(value.data()), value.size());
        }
      });
}

void Filesystem::ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Inode* inode = InodeOf(ino);
  Answer(
      req, "listxattr", inode->id().ino,
      [&]() -> Result<std::string> {
        std::string names;
        if (!inode->is_dir() && !inode->is_reg()) return names;
        const ProcPath proc(inode->fd());
        std::string raw;
        while (true) {
          const ssize_t n = ::listxattr(proc.c_str(), nullptr, 0);
          if (n < 0) return SysError("listxattr", errno);
          raw.resize(static_cast<size_t>(n));
          const ssize_t m = ::listxattr(proc.c_str(), raw.data(), raw.size());
          if (m >= 0) {
            raw.resize(static_cast<size_t>(m));
            break;
          }
          if (errno != ERANGE) return SysError("listxattr", errno);
        }
        // Only what this caller could get: the backing file's own security labels and
        // anything not written through kmsfs stay out of the list.
        const bool privileged = fuse_req_ctx(req)->uid == 0;
        for (size_t pos = 0; pos < raw.size();) {
          const size_t end = raw.find('\0', pos);
          const std::string_view n(raw.data() + pos,
                                   (end == std::string::npos ? raw.size() : end) - pos);
          const Namespace ns = NamespaceOf(n);
          if (ns == Namespace::kUser ||
              (ns == Namespace::kPrivileged && privileged && !n.starts_with("security."))) {
            names.append(n);
            names.push_back('\0');
          }
          if (end == std::string::npos) break;
          pos = end + 1;
        }
        if (size != 0 && size < names.size()) return Errno(ERANGE, "listxattr: buffer");
        return names;
      },
      [size](fuse_req_t r, const std::string& names) {
        if (size == 0) {
          fuse_reply_xattr(r, names.size());
        } else {
          fuse_reply_buf(r, names.data(), names.size());
        }
      });
}

void Filesystem::RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Inode* inode = InodeOf(ino);
  AnswerEmpty(req, "removexattr", inode->id().ino, [&]() -> Status {
    KMSFS_RETURN_IF_ERROR(CheckXattrName(req, name, /*for_write=*/true));
    if (!inode->is_dir() && !inode->is_reg()) return Errno(EPERM, "removexattr");
    const ProcPath proc(inode->fd());
    if (::removexattr(proc.c_str(), name) != 0) return SysError("removexattr", errno);
    return Status::Ok();
  });
}

}  // namespace kmsfs::fs
