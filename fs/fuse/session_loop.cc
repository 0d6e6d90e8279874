#include "fs/fuse/session_loop.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <utility>

#include "common/log/log.h"
#include "fs/fuse/kill_priv.h"
#include "fs/fuse/request_kind.h"

namespace kmsfs::fs {
namespace {

// Request buffers kept for reuse beyond the ones in flight. libfuse allocates each at its
// largest request size (1 MiB + a page), so allocating one per hand-off would cost an mmap,
// page faults and an munmap for every large write.
constexpr size_t kMaxSpareBuffers = 4;

// How often the watchdog looks at the reader. A stall is seen after one to two periods; the
// cost is this many wake-ups per second of one otherwise idle thread.
constexpr auto kStallCheck = std::chrono::milliseconds(10);

// How long the reader keeps looking for the next request before it blocks in read(2), when the
// last one came that soon after its predecessor was answered. A blocked reader costs a wake-up
// per request, and on a virtual machine the wake-up of an idle CPU is the largest part of a
// small request's round trip (fio 4 KiB psync reads on tmpfs: 20k IOPS blocked, 60k with the
// CPUs kept busy; docs/filesystem.md "Performance"). The bound is the CPU a stream of requests
// that just stopped wastes, once.
constexpr int64_t kSpinNs = 50'000;

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Looks (without blocking) whether a request is waiting on `fd`, for up to kSpinNs. poll(2), not
// a non-blocking read: the device is shared with the relief reader, which must block.
void SpinForRequest(int fd) {
  const int64_t until = NowNs() + kSpinNs;
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, 0) == 0 && NowNs() < until) {
  }
}

// Interrupts the relief reader's read(2) when the loop ends (StopRelief). A real-time signal
// nobody else sends; its handler does nothing and is installed without SA_RESTART.
int KickSignal() { return SIGRTMIN + 1; }
void IgnoreKick(int) {}

}  // namespace

SessionLoop::SessionLoop(fuse_session* session, size_t max_workers, bool sync_is_free)
    : session_(session),
      max_workers_(max_workers == 0 ? 1 : max_workers),
      sync_is_free_(sync_is_free) {}

SessionLoop::~SessionLoop() {
  StopRelief();  // only if Run never ran to its end
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  {
    std::lock_guard lock(start_mu_);
    for (std::thread& t : workers_) {
      if (t.joinable()) t.join();
    }
  }
  for (fuse_buf& buf : queue_) std::free(buf.mem);  // only if Run never ran to its end
  for (void* mem : spare_) std::free(mem);
}

int SessionLoop::Run() {
  struct sigaction kick {}, old_kick {};
  kick.sa_handler = IgnoreKick;  // no SA_RESTART: the relief reader's read(2) must end
  sigemptyset(&kick.sa_mask);
  ::sigaction(KickSignal(), &kick, &old_kick);
  watchdog_ = StartQuietThread([this] { Watch(); });
  fuse_buf buf{};  // mem null: libfuse allocates it on the first read
  int res = 0;
  const int fd = fuse_session_fd(session_);
  bool spin = false;       // the last request came within kSpinNs of the answer before it
  int64_t answered = 0;    // when the last inline answer was written (0: after a hand-off)
  while (fuse_session_exited(session_) == 0) {
    // Only after an inline answer, and only while no worker has a request: after a hand-off the
    // next request of that client comes when the worker has answered, and a spinning reader
    // would take the CPU a worker needs (2 cores here).
    if (spin && answered != 0 && handed_off_.load(std::memory_order_relaxed) == 0) {
      SpinForRequest(fd);
      // A signal that came meanwhile (libfuse's handler ends the session) found no read(2) to
      // interrupt.
      if (fuse_session_exited(session_) != 0) break;
    }
    res = fuse_session_receive_buf(session_, &buf);
    if (res == -EINTR) continue;
    if (res <= 0) break;  // 0: unmounted or exited (a signal)
    spin = answered != 0 && NowNs() - answered <= kSpinNs;
    answered = 0;
    // Requests arrive in memory: splice is never negotiated (Filesystem::Init), so no buffer
    // refers to this thread's pipe and any thread may process it.
    // An inline request that waits (on an inode lock a worker holds for long: fallocate, a
    // truncate sealing a large hole, a slow fsync) or is slow itself is covered by the watchdog's
    // relief reader. The reader does not stop answering inline while workers are busy: workers
    // waiting on a hung keyd (opens) would then hold up every stat and every read of open files.
    if ((buf.flags & FUSE_BUF_IS_FD) != 0 || RunsInline(buf.mem, buf.size, sync_is_free_)) {
      inline_seq_.fetch_add(1, std::memory_order_relaxed);
      inline_active_.store(true, std::memory_order_release);
      Process(&buf);
      inline_active_.store(false, std::memory_order_release);
      answered = NowNs();
    } else {
      HandOff(&buf, /*relief=*/false);
    }
  }
  std::free(buf.mem);
  StopRelief();
  ::sigaction(KickSignal(), &old_kick, nullptr);
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  {
    std::lock_guard lock(start_mu_);
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }
  if (const uint64_t n = reliefs_.load(); n > 0) {
    log::Get("fs.fuse")->debug("a relief reader served {} time(s) while a request was slow", n);
  }
  return res < 0 ? res : 0;
}

void SessionLoop::HandOff(fuse_buf* buf, bool relief) {
  bool start = false;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(*buf);
    handed_off_.fetch_add(1, std::memory_order_relaxed);
    *buf = fuse_buf{};
    if (!spare_.empty()) {
      buf->mem = spare_.back();
      spare_.pop_back();
    }
    // A worker per waiting request, up to the bound; idle ones are reused (most recently
    // idle first is up to the condition variable).
    start = queue_.size() > idle_ && started_ < max_workers_;
    if (start) ++started_;
  }
  if (!start) {
    cv_.notify_one();
    return;
  }
  try {
    SignalsBlocked blocked;
    std::lock_guard lock(start_mu_);
    workers_.emplace_back([this] { Work(); });  // in place: a failed reallocation starts none
    return;
  } catch (const std::exception&) {
    // No thread (EAGAIN): the request must not wait for a worker that may never come.
  }
  fuse_buf own{};
  {
    std::lock_guard lock(mu_);
    --started_;
    // The relief reader never answers itself (it must not get stuck): its request waits for
    // a worker, or for the reader's next hand-off to answer one.
    if (relief || queue_.size() <= idle_) return;  // else a worker became free and takes it
    own = queue_.back();
    queue_.pop_back();
  }
  Process(&own);
  handed_off_.fetch_sub(1, std::memory_order_relaxed);
  std::free(own.mem);
}

void SessionLoop::Process(fuse_buf* buf) {
  // For the flags libfuse drops. A spliced request (never negotiated) is not in `mem`.
  const bool in_memory = (buf->flags & FUSE_BUF_IS_FD) == 0;
  const CurrentRequestScope current(in_memory ? buf->mem : nullptr, in_memory ? buf->size : 0);
  fuse_session_process_buf(session_, buf);
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
    Process(&buf);
    handed_off_.fetch_sub(1, std::memory_order_relaxed);
    lock.lock();
    if (spare_.size() < kMaxSpareBuffers) {
      spare_.push_back(buf.mem);
    } else {
      std::free(buf.mem);
    }
  }
}

void SessionLoop::Watch() {
  uint64_t seen = 0;
  bool was_active = false;
  std::unique_lock lock(watch_mu_);
  while (!watch_cv_.wait_for(lock, kStallCheck, [this] { return watch_stop_; })) {
    const bool active = inline_active_.load(std::memory_order_acquire);
    const uint64_t seq = inline_seq_.load(std::memory_order_acquire);
    if (active && was_active && seq == seen && !relief_running_.load()) {
      if (relief_.joinable()) relief_.join();  // the previous relief has ended (not running)
      relief_running_.store(true);
      try {
        relief_ = std::thread([this, seq] { Relieve(seq); });  // inherits: all signals blocked
        reliefs_.fetch_add(1, std::memory_order_relaxed);
      } catch (const std::exception&) {
        relief_running_.store(false);  // no thread now; the next look tries again
      }
    }
    seen = seq;
    was_active = active;
  }
}

void SessionLoop::Relieve(uint64_t stuck_seq) {
  sigset_t only_kick;
  sigfillset(&only_kick);
  sigdelset(&only_kick, KickSignal());
  pthread_sigmask(SIG_SETMASK, &only_kick, nullptr);
  fuse_buf buf{};
  while (fuse_session_exited(session_) == 0 &&
         inline_active_.load(std::memory_order_acquire) &&
         inline_seq_.load(std::memory_order_acquire) == stuck_seq) {
    const int res = fuse_session_receive_buf(session_, &buf);
    if (res == -EINTR) continue;  // the kick (StopRelief): look again
    if (res <= 0) break;          // unmounted: libfuse has marked the session exited
    HandOff(&buf, /*relief=*/true);  // never inline: the relief must not get stuck itself
  }
  std::free(buf.mem);
  relief_running_.store(false);
}

void SessionLoop::StopRelief() {
  if (watchdog_.joinable()) {
    {
      std::lock_guard lock(watch_mu_);
      watch_stop_ = true;
    }
    watch_cv_.notify_all();
    watchdog_.join();
  }
  // The reader has left its loop (inline_active_ is false), so a relief reader ends as soon as
  // its read(2) returns; a request or the kick makes it return.
  while (relief_running_.load()) {
    pthread_kill(relief_.native_handle(), KickSignal());
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (relief_.joinable()) relief_.join();
}

}  // namespace kmsfs::fs
