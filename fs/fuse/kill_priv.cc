#include "fs/fuse/kill_priv.h"

#include <linux/fuse.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "common/log/log.h"
#include "fs/fuse/request_kind.h"

namespace kmsfs::fs {
namespace {

// The unique of the INIT this thread read, if it offered FUSE_HANDLE_KILLPRIV_V2; 0 otherwise
// (the kernel numbers requests from 2 up).
thread_local uint64_t t_init_unique = 0;

// The request this thread is processing (CurrentRequestScope).
thread_local const void* t_request = nullptr;
thread_local size_t t_request_size = 0;

}  // namespace

ssize_t DeviceRead(int fd, void* buf, size_t len, void* /*userdata*/) {
  const ssize_t n = ::read(fd, buf, len);
  if (n >= static_cast<ssize_t>(sizeof(fuse_in_header))) {
    fuse_in_header in;
    std::memcpy(&in, buf, sizeof(in));
    if (in.opcode == FUSE_INIT) {
      t_init_unique = 0;  // whatever an earlier INIT armed
      // Only the first four fields: an old kernel's INIT is that short.
      uint32_t head[4];
      if (static_cast<size_t>(n) >= sizeof(in) + sizeof(head)) {
        std::memcpy(head, static_cast<const char*>(buf) + sizeof(in), sizeof(head));
        t_init_unique = (head[3] & FUSE_HANDLE_KILLPRIV_V2) != 0 ? in.unique : 0;
      }
    }
  }
  return n;
}

ssize_t DeviceWritev(int fd, struct iovec* iov, int count, void* /*userdata*/) {
  if (t_init_unique != 0 && count == 2 && iov[0].iov_len == sizeof(fuse_out_header)) {
    fuse_out_header out;
    std::memcpy(&out, iov[0].iov_base, sizeof(out));
    fuse_init_out init;
    if (out.unique == t_init_unique && out.error == 0 && iov[1].iov_len <= sizeof(init) &&
        iov[1].iov_len >= offsetof(fuse_init_out, flags) + sizeof(init.flags)) {
      t_init_unique = 0;
      std::memcpy(&init, iov[1].iov_base, iov[1].iov_len);
      init.flags |= FUSE_HANDLE_KILLPRIV_V2;
      iovec amended[2] = {iov[0], {&init, iov[1].iov_len}};
      const ssize_t n = ::writev(fd, amended, 2);
      if (n >= 0) {
        log::Get("fs.fuse")->debug("set-id bits are cleared by kmsfs (FUSE_HANDLE_KILLPRIV_V2)");
      }
      return n;
    }
  }
  return ::writev(fd, iov, count);
}

CurrentRequestScope::CurrentRequestScope(const void* mem, size_t size) {
  t_request = mem;
  t_request_size = size;
}

CurrentRequestScope::~CurrentRequestScope() {
  t_request = nullptr;
  t_request_size = 0;
}

bool CurrentRequestKillsSuidGid() { return AsksToKillSuidGid(t_request, t_request_size); }

}  // namespace kmsfs::fs
