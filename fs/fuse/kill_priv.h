// KillPriv: kmsfs clears set-id bits itself (FUSE_HANDLE_KILLPRIV_V2), so that the kernel stops
// asking for security.capability before every write(2).
//
// Without it, the kernel's file_remove_privs sends a GETXATTR "security.capability" ahead of
// each write: two round trips per small write. With it the kernel sets S_NOSEC on an inode once
// it has seen no set-id bits and no capability, skips the question until its attributes are next
// refreshed (which clears the mark: at most about once per attribute timeout), and instead
// tells the server, on the requests where Linux would clear set-id bits, to do so: a WRITE with
// FUSE_WRITE_KILL_SUIDGID, a size-changing SETATTR with FATTR_KILL_SUIDGID and an O_TRUNC OPEN
// (or CREATE) with FUSE_OPEN_KILL_SUIDGID, each only when the caller lacks CAP_FSETID. (The
// WRITE flag comes on O_DIRECT writes on every mount.) libfuse 3.14 can neither negotiate the
// capability nor pass the WRITE and OPEN flags on, so this module does both from the raw bytes
// (the flags are read by request_kind.h's AsksToKillSuidGid):
//  - DeviceRead/DeviceWritev are the session's custom I/O (fuse_session_custom_io): read(2) and
//    writev(2), except that the successful reply to an INIT that offers the capability has
//    FUSE_HANDLE_KILLPRIV_V2 added to its flags;
//  - CurrentRequestScope marks the raw request the calling thread is processing (SessionLoop),
//    and CurrentRequestKillsSuidGid reads its flag inside the libfuse callback.
// Kept apart from the libfuse headers (it reads <linux/fuse.h>, which defines the same names).
// docs/filesystem.md ("The kernel's question before every write, and set-id bits") says what
// clears what.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>

namespace kmsfs::fs {

// fuse_custom_io's read and writev. The INIT request and its reply must go through the same
// thread (the reader answers INIT itself: RunsInline).
ssize_t DeviceRead(int fd, void* buf, size_t len, void* userdata);
ssize_t DeviceWritev(int fd, struct iovec* iov, int count, void* userdata);

// While alive, `mem` (`size` bytes, starting with the kernel's fuse_in_header) is the calling
// thread's current request. Not nestable.
class CurrentRequestScope {
 public:
  CurrentRequestScope(const void* mem, size_t size);
  ~CurrentRequestScope();
  CurrentRequestScope(const CurrentRequestScope&) = delete;
  CurrentRequestScope& operator=(const CurrentRequestScope&) = delete;
};

// Whether the calling thread's current request is a WRITE, OPEN or CREATE on which the kernel
// asks the server to clear set-id bits. False outside a CurrentRequestScope.
bool CurrentRequestKillsSuidGid();

}  // namespace kmsfs::fs
