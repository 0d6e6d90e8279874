// SessionLoop: kmsfs's own multi-threaded request loop over a libfuse low-level session.
#pragma once

#include <signal.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "fs/fuse/reply.h"  // FUSE_USE_VERSION + <fuse_lowlevel.h>

namespace kmsfs::fs {

// One reader thread (the caller of Run) reads every request from /dev/fuse and answers the
// short ones itself (RunsInline: lookups, attributes, small reads and writes, ...); the rest
// (everything that may ask keyd or sync the disk, and large I/O) it hands to a pool of at most
// `max_workers` worker threads, started when needed, and reads on at once.
//
// Why not fuse_session_loop_mt: its threads all block in read(2) on /dev/fuse, and the kernel
// wakes them first-come first-served, so every request of a single client lands on a different
// thread (of 10) than the one that answered the last — a cross-CPU wake-up per request. With
// one reader, a 4 KiB read costs one read(2), the work and one writev(2) on a warm thread.
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
  // Blocks every signal in the calling thread for its lifetime (a thread created meanwhile
  // inherits the mask), then restores the old mask.
  class SignalsBlocked {
   public:
    SignalsBlocked();
    ~SignalsBlocked();
    SignalsBlocked(const SignalsBlocked&) = delete;
    SignalsBlocked& operator=(const SignalsBlocked&) = delete;

   private:
    sigset_t old_;
  };

  void Work();
  // Hands `buf` to a worker and gives the reader a recycled buffer in its place.
  void HandOff(fuse_buf* buf);

  fuse_session* const session_;
  const size_t max_workers_;
  const bool sync_is_free_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<fuse_buf> queue_;  // guarded by mu_: requests waiting for a worker
  std::vector<void*> spare_;    // guarded by mu_: request buffers (libfuse-malloc'ed) to reuse
  std::vector<std::thread> workers_;  // started by the reader only
  size_t idle_ = 0;                   // guarded by mu_: workers waiting for a request
  bool stop_ = false;                 // guarded by mu_
};

}  // namespace kmsfs::fs
