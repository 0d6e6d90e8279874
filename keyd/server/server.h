// Server: keyd's accept loop — framing, connection limits and timeouts, caller identity, and the
// worker pool that runs each request through the KmsHandler.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "common/base/unique_fd.h"
#include "keyd/service/kms_service_api.h"

namespace kmsfs::keyd {

// Limits that keep one client from hurting the others (docs/threat-model.md, A3: "can try to
// exhaust keyd"). Defaults suit a host; tests shorten the times.
struct ServerOptions {
  size_t workers = 8;  // requests may block on an LMDB fsync; 8 keeps the disk busy, not the CPU
  size_t max_connections = 4096;          // beyond this, accept-and-close (logged, rate-limited)
  size_t max_connections_per_uid = 1024;  // uid 0 and trusted uids are exempt (the filesystem)
  std::chrono::milliseconds idle_timeout{60'000};    // no partial frame, no request in flight
  std::chrono::milliseconds frame_timeout{5'000};    // first byte of a frame to its last
  std::chrono::milliseconds write_timeout{5'000};    // a response the client does not read
  std::chrono::milliseconds shutdown_grace{10'000};  // in-flight requests at SIGTERM
  // Bytes all connections together may hold in unfinished frames; a connection that would go past
  // it is closed. 4096 clients x 256 KiB frames would otherwise pin 1 GiB.
  size_t max_partial_bytes = size_t{64} << 20;
  std::vector<uid_t> trusted_uids;  // may send OnBehalfOf, besides uid 0
  // Called on a worker thread every `scheduler_interval` (never two at once): the service's
  // rotation and deletion work. Empty or zero interval: never.
  std::function<void()> scheduler;
  std::chrono::milliseconds scheduler_interval{0};
  std::string ready_status = "serving";  // STATUS= sent with READY=1
};

// One epoll thread owns every socket: it accepts, reads frames with ipc::FrameDecoder, hands each
// complete request to the worker pool and writes the response back without blocking. Workers never
// touch a socket, so a connection closed while its request runs cannot hit a reused fd. Requests of
// one connection are answered in order, one at a time: the loop stops reading a connection while
// its request is in flight (docs/protocol.md §7).
class Server {
 public:
  // Blocks SIGTERM and SIGINT in the calling thread; Run() takes them from a signalfd instead.
  // Call in main() before any thread exists, so every later thread inherits the mask.
  static Status BlockStopSignals();

  // Takes the listening socket (from AcquireListenSocket). `handler` must outlive the Server.
  // Raises the soft RLIMIT_NOFILE to fit max_connections (warns if the hard limit is lower).
  // kFailedPrecondition if BlockStopSignals() was not called; kIo for epoll/eventfd failures.
  static Result<std::unique_ptr<Server>> Create(int listen_fd, KmsHandler& handler,
                                                ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves until SIGTERM/SIGINT or Stop(). Sends READY=1 when the loop starts, WATCHDOG=1 at half
  // the unit's WatchdogSec= (withheld when requests are waiting and none has completed for a
  // whole WatchdogSec: a wedged worker pool gets keyd restarted), and STOPPING=1 on the way out.
  // Graceful stop: stop accepting (the caller then closes the socket), close idle connections,
  // let in-flight requests finish and their answers go out (up to shutdown_grace), join the
  // workers — which waits for a handler call that never returns; systemd's TimeoutStopSec= is the
  // backstop. Returns OK after a requested stop; an error only if the loop itself failed. Call
  // once, from one thread.
  Status Run();
  // Asks Run() to stop as on SIGTERM. Thread-safe and async-signal-safe.
  void Stop();

 private:
  class Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kmsfs::keyd
