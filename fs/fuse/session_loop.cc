#include "fs/fuse/session_loop.h"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <cstdlib>
#include <exception>
#include <utility>

#include "fs/fuse/request_kind.h"

namespace kmsfs::fs {
namespace {

// Request buffers kept for reuse beyond the ones in flight. libfuse allocates each at its
// largest request size (1 MiB + a page), so allocating one per hand-off would cost an mmap,
// page faults and an munmap for every large write.
constexpr size_t kMaxSpareBuffers = 4;

}  // namespace

SessionLoop::SignalsBlocked::SignalsBlocked() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old_);
}

SessionLoop::SignalsBlocked::~SignalsBlocked() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

SessionLoop::SessionLoop(fuse_session* session, size_t max_workers, bool sync_is_free)
    : session_(session),
      max_workers_(max_workers == 0 ? 1 : max_workers),
      sync_is_free_(sync_is_free) {}

SessionLoop::~SessionLoop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  for (fuse_buf& buf : queue_) std::free(buf.mem);  // only if Run never ran to its end
  for (void* mem : spare_) std::free(mem);
}

int SessionLoop::Run() {
  fuse_buf buf{};  // mem null: libfuse allocates it on the first read
  int res = 0;
  while (fuse_session_exited(session_) == 0) {
    res = fuse_session_receive_buf(session_, &buf);
    if (res == -EINTR) continue;
    if (res <= 0) break;  // 0: unmounted or exited (a signal)
    // Requests arrive in memory: splice is never negotiated (Filesystem::Init), so no buffer
    // refers to this thread's pipe and any thread may process it.
    if ((buf.flags & FUSE_BUF_IS_FD) != 0 || RunsInline(buf.mem, buf.size, sync_is_free_)) {
      fuse_session_process_buf(session_, &buf);
    } else {
      HandOff(&buf);
    }
  }
  std::free(buf.mem);
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  return res < 0 ? res : 0;
}

void SessionLoop::HandOff(fuse_buf* buf) {
  bool start = false;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(*buf);
    *buf = fuse_buf{};
    if (!spare_.empty()) {
      buf->mem = spare_.back();
      spare_.pop_back();
    }
    // A worker per waiting request, up to the bound; idle ones are reused (most recently
    // idle first is up to the condition variable).
    start = queue_.size() > idle_ && workers_.size() < max_workers_;
  }
  if (!start) {
    cv_.notify_one();
    return;
  }
  try {
    SignalsBlocked blocked;
    workers_.emplace_back([this] { Work(); });
    return;
  } catch (const std::exception&) {
    // No thread (EAGAIN): the request must not wait for a worker that may never come.
  }
  fuse_buf own{};
  {
    std::lock_guard lock(mu_);
    if (queue_.size() <= idle_) return;  // a worker became free meanwhile and takes it
    own = queue_.back();
    queue_.pop_back();
  }
  fuse_session_process_buf(session_, &own);
  std::free(own.mem);
}

void SessionLoop::Work() {
  std::unique_lock lock(mu_);
  for (;;) {
    ++idle_;
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    --idle_;
    if (queue_.empty()) return;  // stop_ and nothing left to answer
    fuse_buf buf = queue_.front();
    queue_.pop_front();
    lock.unlock();
    fuse_session_process_buf(session_, &buf);
    lock.lock();
    if (spare_.size() < kMaxSpareBuffers) {
      spare_.push_back(buf.mem);
    } else {
      std::free(buf.mem);
    }
  }
}

}  // namespace kmsfs::fs
