// WorkerPool: a fixed set of threads running submitted tasks in FIFO order.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kmsfs::keyd {

// Why a pool and not the event loop: a KMS request may block for milliseconds on an LMDB commit
// (fsync of the audit record), and the loop must keep accepting and timing out other clients
// meanwhile. The queue is unbounded here because the server bounds it: at most one request per
// connection is in flight, and connections are limited.
//
// Thread-safe. Tasks must not throw (the server catches everything inside its task).
class WorkerPool {
 public:
  explicit WorkerPool(size_t threads);
  ~WorkerPool();  // Shutdown()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`. After Shutdown() began, the task is dropped (returns false).
  bool Submit(std::function<void()> task);
  // Runs every task already queued, then joins the threads. Idempotent; not from a worker.
  void Shutdown();

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                    // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;         // touched only by the owner
};

}  // namespace kmsfs::keyd
