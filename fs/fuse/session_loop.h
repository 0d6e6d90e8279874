// SessionLoop: kmsfs's own multi-threaded request loop over a libfuse low-level session.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "common/base/signals_blocked.h"
#include "fs/fuse/reply.h"  // FUSE_USE_VERSION + <fuse_lowlevel.h>

namespace kmsfs::fs {

// One reader thread (the caller of Run) reads every request from /dev/fuse and answers the
// short ones itself (RunsInline: lookups, attributes, small reads and writes, ...); the rest
// (everything that may ask keyd or sync the disk, and large I/O) it hands to a pool of at most
// `max_workers` worker threads, started when needed, and reads on at once.
//
// A request answered inline can still take long: it may wait for an inode lock a worker holds
// for long (fallocate or a truncate sealing a large hole, a slow fsync), or be slow for reasons
// no classification sees in advance (a small write far past the end of a large sparse file
// seals every block of the hole; the FORGET of a deleted file closes its backing file, and the
// backing filesystem frees its blocks in that close). So a watchdog thread checks every kStallCheck whether the reader is still in
// the same inline request it saw last time; if so, it starts a relief reader that reads and
// hands off (never answers inline) until the reader is back. Other requests on the mount then
// wait at most ~2 kStallCheck behind one slow request, as with fuse_session_loop_mt.
//
// Why not fuse_session_loop_mt: its threads all block in read(2) on /dev/fuse, and the kernel
// wakes them first-come first-served, so every request of a single client lands on a different
// thread (of 10) than the one that answered the last — a cross-CPU wake-up per request. With
// one reader, a 4 KiB read costs one read(2), the work and one writev(2) on a warm thread.
// While requests come fast (one within 50 µs of the last inline answer) and no worker has one,
// the reader polls the device for up to 50 µs before it blocks in read(2): waking an idle CPU is
// most of a small request's round trip on a VM.
// Measured (fio psync, 4 KiB, tmpfs): see docs/filesystem.md "Performance".
//
// Workers block every signal: SIGINT/SIGTERM/SIGHUP (libfuse's handlers end the session) reach
// the reader, whose read(2) they interrupt, so Run returns promptly. Run returns once the
// session has exited (unmount, signal) and every handed-off request has been answered.
class SessionLoop {
 public:
  // `sync_is_free`: see RunsInline (the backing directory is on tmpfs or ramfs).
  SessionLoop(fuse_session* session, size_t max_workers, bool sync_is_free);
  ~SessionLoop();
  SessionLoop(const SessionLoop&) = delete;
  SessionLoop& operator=(const SessionLoop&) = delete;

  // 0 when the session ended normally (unmount or signal), else a negative errno from reading
  // the device.
  int Run();

  // Starts `fn` on a new thread with every signal blocked (for threads that live beside the
  // loop, like the revalidation thread, so that signals reach the reader).
  template <class Fn>
  static std::thread StartQuietThread(Fn&& fn) {
    SignalsBlocked blocked;
    return std::thread(std::forward<Fn>(fn));
  }

 private:
  // Runs the request's libfuse callback on this thread, as its CurrentRequestScope.
  void Process(fuse_buf* buf);
  void Work();
  // Hands `buf` to a worker and gives the caller a recycled buffer in its place. Called by the
  // reader and (`relief`) the relief reader, which never answers a request itself.
  void HandOff(fuse_buf* buf, bool relief);
  // The watchdog thread (see the class comment) and the relief reader it starts, which serves
  // while the reader is still in inline request number `stuck_seq`.
  void Watch();
  void Relieve(uint64_t stuck_seq);
  // Ends Watch and Relieve (Run, after its loop): the relief reader may be blocked in read(2),
  // which kKickSignal interrupts.
  void StopRelief();

  fuse_session* const session_;
  const size_t max_workers_;
  const bool sync_is_free_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<fuse_buf> queue_;  // guarded by mu_: requests waiting for a worker
  std::vector<void*> spare_;    // guarded by mu_: request buffers (libfuse-malloc'ed) to reuse
  std::vector<std::thread> workers_;  // guarded by start_mu_ (joined by Run at the end)
  std::mutex start_mu_;
  size_t started_ = 0;                // guarded by mu_: workers started (bound: max_workers_)
  size_t idle_ = 0;                   // guarded by mu_: workers waiting for a request
  bool stop_ = false;                 // guarded by mu_
  // Requests handed off and not yet answered (the reader does not spin while there are any).
  std::atomic<uint32_t> handed_off_{0};

  // The reader numbers the inline requests it starts and says whether it is in one; the
  // watchdog compares two looks kStallCheck apart.
  std::atomic<uint64_t> inline_seq_{0};
  std::atomic<bool> inline_active_{false};
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool watch_stop_ = false;  // guarded by watch_mu_
  std::thread watchdog_;     // started and joined by Run
  std::thread relief_;       // started and joined by the watchdog; the last one by StopRelief
  std::atomic<bool> relief_running_{false};
  std::atomic<uint64_t> reliefs_{0};  // how many times a relief reader was started (a debug line)
};

}  // namespace kmsfs::fs
