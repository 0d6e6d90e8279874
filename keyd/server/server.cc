#include "keyd/server/server.h"

#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/base/bytes.h"
#include "common/crypto/secret.h"
#include "common/ipc/errors.h"
#include "common/ipc/frame.h"
#include "common/ipc/message.h"
#include "common/ipc/operation.h"
#include "common/ipc/peer_cred.h"
#include "common/log/log.h"
#include "keyd/server/peer_identity.h"
#include "keyd/server/systemd_notify.h"
#include "keyd/server/worker_pool.h"

namespace kmsfs::keyd {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// epoll user data: small fixed tags for the loop's own fds, connection ids above them.
constexpr uint64_t kListenTag = 1;
constexpr uint64_t kWakeTag = 2;
constexpr uint64_t kSignalTag = 3;
constexpr uint64_t kFirstConnectionId = 16;

constexpr size_t kReadChunk = 16 * 1024;
// Reads per readiness event and accepts per wakeup: level-triggered epoll brings us back, and a
// client that streams bytes (or a connect flood) cannot monopolize the loop.
constexpr int kReadsPerEvent = 4;
constexpr int kAcceptsPerEvent = 64;
constexpr int kMaxEvents = 256;
// Timeouts are enforced by a sweep at this period, so they fire up to this much late. A sweep is
// O(connections), trivial at 4096.
constexpr milliseconds kSweepPeriod{100};
// After EMFILE/ENFILE, stop accepting for a moment instead of spinning on a readable listen fd.
constexpr milliseconds kAcceptPause{100};
constexpr auto kLogEvery = std::chrono::seconds(10);

std::shared_ptr<spdlog::logger> Log() {
  static const auto logger = log::Get("keyd.server");
  return logger;
}

// At most one line per kLogEvery per kind of event, with the number of lines it stands for: a
// connection flood must not turn into a log flood.
class RateLimitedLog {
 public:
  // True if a line may be written now; *count then holds how many events it covers.
  bool Allow(Clock::time_point now, uint64_t* count) {
    ++pending_;
    if (now < next_) return false;
    next_ = now + kLogEvery;
    *count = std::exchange(pending_, 0);
    return true;
  }

 private:
  Clock::time_point next_{};
  uint64_t pending_ = 0;
};

// Bytes waiting to be read: a request that arrived since the last epoll round. Closing now would
// discard it (the client would see a reset and could not tell whether it ran), so an "idle"
// connection with input is not idle.
bool HasInput(int fd) {
  char b;
  return ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

std::string Framed(std::string_view payload) {
  std::string out(ipc::kFrameHeaderLen + payload.size(), '\0');
  PutU32(reinterpret_cast<uint8_t*>(out.data()), static_cast<uint32_t>(payload.size()));
  std::memcpy(out.data() + ipc::kFrameHeaderLen, payload.data(), payload.size());
  return out;
}

// A complete frame for an error response; cannot fail (the inputs are ours and valid).
std::string ErrorFrame(uint64_t request_id, std::string_view name, std::string message) {
  ipc::Response r;
  r.request_id = request_id;
  r.error = ipc::ErrorInfo{std::string(name), std::move(message)};
  auto payload = ipc::SerializeResponse(r);
  if (!payload.ok()) {  // only if `message` were invalid UTF-8
    r.error->message = "unprintable error message";
    payload = ipc::SerializeResponse(r);
  }
  return Framed(*payload);
}

struct Connection {
  enum class State { kReading, kBusy, kWriting };

  uint64_t id = 0;
  UniqueFd fd;
  Principal peer;
  ipc::FrameDecoder decoder;
  State state = State::kReading;
  Clock::time_point last_activity;
  bool in_frame = false;          // a partial frame is buffered
  Clock::time_point frame_start;  // when its first byte arrived
  size_t partial_bytes = 0;       // upper bound of its bytes, counted in partial_total_
  std::string out;                // framed response being written (may hold a Plaintext)
  size_t out_off = 0;
  Clock::time_point write_deadline;
  bool close_after_write = false;
  uint32_t events = 0;  // current epoll interest
};

// A worker's answer for one connection.
struct Completion {
  uint64_t connection_id = 0;
  std::string frame;
  bool close_after = false;
};

// Where finished requests wait for the event loop. Shared with every reply still on its way: a
// reply can come from the audit trail's committer thread after the server is gone (a request
// in flight past the shutdown grace), and then it is wiped and dropped.
class Outbox {
 public:
  explicit Outbox(int wake_fd) : wake_fd_(wake_fd) {}
  void Post(Completion completion) {
    std::lock_guard lock(mu_);
    if (closed_) {
      crypto::Wipe(completion.frame);
      return;
    }
    items_.push_back(std::move(completion));
    const uint64_t one = 1;
    // Under the lock: once Close returns, nobody writes to the fd (the server closes it next).
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }
  std::vector<Completion> Take() {
    std::lock_guard lock(mu_);
    std::vector<Completion> out;
    out.swap(items_);
    return out;
  }
  // No more posts reach the loop (they are wiped); what waits is wiped too.
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    for (auto& c : items_) crypto::Wipe(c.frame);
    items_.clear();
  }

 private:
  const int wake_fd_;
  std::mutex mu_;
  std::vector<Completion> items_;  // GUARDED_BY(mu_)
  bool closed_ = false;            // GUARDED_BY(mu_)
};

}  // namespace

class Server::Impl {
 public:
  Impl(int listen_fd, KmsHandler& handler, ServerOptions options)
      : listen_fd_(listen_fd), handler_(handler), options_(std::move(options)) {}

  ~Impl() {
    for (auto& [id, c] : conns_) crypto::Wipe(c->out);
    if (outbox_) outbox_->Close();  // before wake_fd_ closes
  }

  Status Init();
  Status Run();
  void Stop() {
    stop_requested_.store(true);
    const uint64_t one = 1;
    // async-signal-safe; a full counter (impossible in practice) still leaves the loop woken.
    [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof one);
  }

 private:
  // Loop thread only.
  void OnListenReady(Clock::time_point now);
  void OnWake();
  void OnSignal();
  void OnConnectionEvent(uint64_t id, uint32_t events, Clock::time_point now);
  void ReadFrom(Connection& c, Clock::time_point now);
  void Dispatch(Connection& c);
  void TryWrite(Connection& c, Clock::time_point now);
  void SendBestEffortAndClose(Connection& c, std::string frame);
  void Close(uint64_t id);
  void SetInterest(Connection& c, uint32_t events);
  void Sweep(Clock::time_point now);
  void BeginStop(Clock::time_point now);
  void PauseAccepting(Clock::time_point now);
  void ResumeAccepting();
  void MaybeRunScheduler(Clock::time_point now);
  void SetPartial(Connection& c, size_t bytes);

  // Worker threads.
  // Runs one request; its answer reaches the loop through outbox_, now or later (HandleAsync).
  void Process(uint64_t connection_id, const Principal& peer, std::string frame);

  const int listen_fd_;
  KmsHandler& handler_;
  const ServerOptions options_;

  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;
  UniqueFd signal_fd_;
  std::unique_ptr<WorkerPool> pool_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> scheduler_running_{false};

  std::shared_ptr<Outbox> outbox_;  // set by Init; closed by the destructor and at Run's end

  // Loop thread only.
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  std::unordered_map<uid_t, size_t> per_uid_;
  uint64_t next_id_ = kFirstConnectionId;
  size_t in_flight_ = 0;  // requests handed to workers whose completion has not come back
  Clock::time_point last_completion_ = Clock::now();  // for the watchdog's progress check
  bool reported_wedged_ = false;
  size_t partial_total_ = 0;  // sum of Connection::partial_bytes
  bool accepting_ = true;
  bool accept_paused_ = false;
  Clock::time_point accept_resume_at_;
  bool stopping_ = false;
  Clock::time_point stop_deadline_;
  RateLimitedLog log_conn_limit_, log_uid_limit_, log_no_fds_, log_slow_, log_bad_frame_,
      log_budget_;
};

namespace {

// Every connection is an fd: make room for max_connections plus keyd's own (LMDB, epoll, logs).
// Raises only the soft limit, up to the hard one — the unit's LimitNOFILE= or the shell's.
void RaiseFdLimit(size_t max_connections) {
  constexpr size_t kOwnFds = 64;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  const rlim_t want = static_cast<rlim_t>(max_connections + kOwnFds);
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
    lim.rlim_cur = lim.rlim_max == RLIM_INFINITY ? want : std::min(want, lim.rlim_max);
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0 || ::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  }
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
    Log()->warn(
        "RLIMIT_NOFILE is {} (hard limit {}), below --max-connections + {}: accepts will "
        "fail with EMFILE before the connection limit; raise LimitNOFILE=",
        lim.rlim_cur, lim.rlim_max, kOwnFds);
  }
}

}  // namespace

Status Server::Impl::Init() {
  RaiseFdLimit(options_.max_connections);
  epoll_fd_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_) return Error::FromErrno("epoll_create1", errno);
  wake_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) return Error::FromErrno("eventfd", errno);
  outbox_ = std::make_shared<Outbox>(wake_fd_.get());

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigset_t current;
  if (::pthread_sigmask(SIG_BLOCK, nullptr, &current) != 0 || !sigismember(&current, SIGTERM) ||
      !sigismember(&current, SIGINT)) {
    return Error(Code::kFailedPrecondition,
                 "SIGTERM/SIGINT are not blocked: call Server::BlockStopSignals() first");
  }
  signal_fd_ = UniqueFd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_) return Error::FromErrno("signalfd", errno);

  const std::pair<int, uint64_t> fixed[] = {
      {listen_fd_, kListenTag}, {wake_fd_.get(), kWakeTag}, {signal_fd_.get(), kSignalTag}};
  for (const auto& [fd, tag] : fixed) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return Error::FromErrno("epoll_ctl(ADD)", errno);
    }
  }
  return Status::Ok();
}

Status Server::Impl::Run() {
  pool_ = std::make_unique<WorkerPool>(options_.workers);
  const auto watchdog = std::chrono::duration_cast<milliseconds>(WatchdogInterval()) / 2;
  auto now = Clock::now();
  auto next_sweep = now + kSweepPeriod;
  auto next_watchdog = now + watchdog;
  auto next_scheduler = now + options_.scheduler_interval;
  const bool scheduler_on = options_.scheduler && options_.scheduler_interval.count() > 0;

  NotifyReady(options_.ready_status);
  if (watchdog.count() > 0) NotifyWatchdog();

  std::array<epoll_event, kMaxEvents> events;
  Status result;
  for (;;) {
    if (stop_requested_.load() && !stopping_) BeginStop(Clock::now());
    if (stopping_ && in_flight_ == 0 && conns_.empty()) break;
    now = Clock::now();
    if (stopping_ && now >= stop_deadline_) {
      Log()->warn(
          "shutdown grace of {} ms over: dropping {} connection(s), {} request(s) in flight",
          options_.shutdown_grace.count(), conns_.size(), in_flight_);
      break;
    }
    auto wake_at = next_sweep;
    if (watchdog.count() > 0) wake_at = std::min(wake_at, next_watchdog);
    const int timeout = static_cast<int>(
        std::max<int64_t>(0, std::chrono::ceil<milliseconds>(wake_at - now).count()));
    const int n = ::epoll_wait(epoll_fd_.get(), events.data(), kMaxEvents, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      result = Error::FromErrno("epoll_wait", errno);
      Log()->error("event loop failed: {}", result.ToString());
      break;
    }
    now = Clock::now();
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kListenTag) {
        OnListenReady(now);
      } else if (tag == kWakeTag) {
        OnWake();
      } else if (tag == kSignalTag) {
        OnSignal();
      } else {
        OnConnectionEvent(tag, events[i].events, now);
      }
    }
    now = Clock::now();
    if (now >= next_sweep) {
      Sweep(now);
      next_sweep = now + kSweepPeriod;
    }
    if (watchdog.count() > 0 && now >= next_watchdog) {
      // The ping vouches for the workers too: requests waiting while none has completed for a
      // whole WatchdogSec means the pool is wedged (a hung store), and systemd should restart us.
      const bool wedged = in_flight_ > 0 && now - last_completion_ > 2 * watchdog;
      if (!wedged) {
        NotifyWatchdog();
      } else if (!reported_wedged_) {
        reported_wedged_ = true;
        Log()->error(
            "no request has completed for {} ms with {} in flight: withholding the "
            "watchdog ping",
            std::chrono::duration_cast<milliseconds>(now - last_completion_).count(), in_flight_);
      }
      next_watchdog = now + watchdog;
    }
    if (scheduler_on && !stopping_ && now >= next_scheduler) {
      MaybeRunScheduler(now);
      next_scheduler = now + options_.scheduler_interval;
    }
  }

  if (!stopping_) NotifyStopping();
  for (auto& [id, c] : conns_) crypto::Wipe(c->out);
  conns_.clear();
  per_uid_.clear();
  pool_->Shutdown();  // runs what is queued (answers are dropped: their connections are gone)
  // Answers still on their way (their audit records not yet durable when the grace ran out) are
  // wiped when they come: their connections are gone.
  outbox_->Close();
  return result;
}

void Server::Impl::BeginStop(Clock::time_point now) {
  stopping_ = true;
  stop_deadline_ = now + options_.shutdown_grace;
  NotifyStopping();
  Log()->info("stopping: no new connections; {} request(s) in flight", in_flight_);
  if (accepting_) {
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, listen_fd_, nullptr);
    accepting_ = false;
  }
  // Connections between requests go now; the others when their answer is written.
  std::vector<uint64_t> idle;
  for (auto& [id, c] : conns_) {
    if (c->state == Connection::State::kReading) idle.push_back(id);
  }
  for (uint64_t id : idle) Close(id);
}

void Server::Impl::OnSignal() {
  signalfd_siginfo info;
  while (::read(signal_fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    Log()->info("received signal {} ({})", info.ssi_signo,
                ::strsignal(static_cast<int>(info.ssi_signo)));
    stop_requested_.store(true);
  }
}

void Server::Impl::PauseAccepting(Clock::time_point now) {
  if (!accepting_ || accept_paused_) return;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, listen_fd_, nullptr);
  accept_paused_ = true;
  accept_resume_at_ = now + kAcceptPause;
}

void Server::Impl::ResumeAccepting() {
  if (!accept_paused_ || stopping_) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, listen_fd_, &ev) == 0) accept_paused_ = false;
}

void Server::Impl::OnListenReady(Clock::time_point now) {
  for (int i = 0; i < kAcceptsPerEvent && accepting_ && !accept_paused_; ++i) {
    const int raw = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (raw < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      uint64_t count = 0;
      if (log_no_fds_.Allow(now, &count)) {
        Log()->warn("accept failed ({}), pausing accepts for {} ms ({} time(s) in {} s)",
                    std::strerror(err), kAcceptPause.count(), count,
                    std::chrono::duration_cast<std::chrono::seconds>(kLogEvery).count());
      }
      PauseAccepting(now);
      return;
    }
    UniqueFd fd(raw);
    // Accept-and-close rather than leaving the backlog full: a client told "closed" retries
    // later; one stuck in connect() would wait out its whole timeout.
    if (conns_.size() >= options_.max_connections) {
      uint64_t count = 0;
      if (log_conn_limit_.Allow(now, &count)) {
        Log()->warn("connection limit of {} reached: closed {} new connection(s)",
                    options_.max_connections, count);
      }
      continue;
    }
    auto cred = ipc::GetPeerCred(fd.get());
    if (!cred.ok()) {
      Log()->info("dropping a connection without peer credentials: {}", cred.error().ToString());
      continue;
    }
    const bool exempt = IsTrustedForwarder(cred->uid, options_.trusted_uids);
    const auto uid_it = per_uid_.find(cred->uid);
    const size_t uid_count = uid_it == per_uid_.end() ? 0 : uid_it->second;
    if (!exempt && uid_count >= options_.max_connections_per_uid) {
      uint64_t count = 0;
      if (log_uid_limit_.Allow(now, &count)) {
        Log()->warn("uid {} reached its limit of {} connections: closed {} new connection(s)",
                    cred->uid, options_.max_connections_per_uid, count);
      }
      continue;
    }
    auto c = std::make_unique<Connection>();
    c->id = next_id_++;
    c->peer = DescribeProcess(cred->uid, cred->gid, cred->pid);
    c->last_activity = now;
    c->events = EPOLLIN | EPOLLRDHUP;
    epoll_event ev{};
    ev.events = c->events;
    ev.data.u64 = c->id;
    if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
      Log()->warn("epoll_ctl(ADD) for a new connection failed: {}", std::strerror(errno));
      continue;
    }
    c->fd = std::move(fd);
    ++per_uid_[cred->uid];
    Log()->debug("conn {}: uid {} gid {} pid {} exe '{}' unit '{}'", c->id, c->peer.uid,
                 c->peer.gid, c->peer.pid, c->peer.executable, c->peer.unit);
    conns_.emplace(c->id, std::move(c));
  }
}

void Server::Impl::SetInterest(Connection& c, uint32_t events) {
  if (c.events == events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = c.id;
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) == 0) c.events = events;
}

void Server::Impl::SetPartial(Connection& c, size_t bytes) {
  partial_total_ -= c.partial_bytes;
  c.partial_bytes = bytes;
  partial_total_ += bytes;
}

void Server::Impl::Close(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Connection& c = *it->second;
  SetPartial(c, 0);
  crypto::Wipe(c.out);
  auto uid_it = per_uid_.find(c.peer.uid);
  if (uid_it != per_uid_.end() && --uid_it->second == 0) per_uid_.erase(uid_it);
  conns_.erase(it);  // closing the fd also removes it from the epoll set
}

void Server::Impl::OnConnectionEvent(uint64_t id, uint32_t events, Clock::time_point now) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Connection& c = *it->second;
  switch (c.state) {
    case Connection::State::kReading:
      // EPOLLHUP/EPOLLERR/EPOLLRDHUP: recv reports EOF or the error.
      ReadFrom(c, now);
      return;
    case Connection::State::kWriting:
      TryWrite(c, now);
      return;
    case Connection::State::kBusy:
      // Interest is empty while busy, so only HUP/ERR get here: the client is gone and its answer
      // has nowhere to go. The completion is dropped when it arrives.
      if (events & (EPOLLHUP | EPOLLERR)) {
        Log()->debug("conn {}: client went away during its request", c.id);
        Close(id);
      }
      return;
  }
}

void Server::Impl::ReadFrom(Connection& c, Clock::time_point now) {
  std::array<char, kReadChunk> buf;
  for (int i = 0; i < kReadsPerEvent; ++i) {
    const ssize_t n = ::recv(c.fd.get(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n == 0) {
      if (!c.decoder.AtBoundary()) {
        Log()->debug("conn {}: closed by the client in the middle of a frame", c.id);
      }
      Close(c.id);
      return;
    }
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      Log()->debug("conn {}: recv failed: {}", c.id, std::strerror(err));
      Close(c.id);
      return;
    }
    c.last_activity = now;
    if (!c.in_frame) {
      c.in_frame = true;
      c.frame_start = now;
    }
    const size_t got = static_cast<size_t>(n);
    const size_t frames_before = c.decoder.pending();
    Status fed = c.decoder.Feed(std::string_view(buf.data(), got));
    crypto::Wipe(std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), got));
    if (!fed.ok()) {
      // The stream cannot be resynchronized. Answer with RequestId 0 (the client's KeydClient
      // reads that as "keyd could not read the request") and close.
      uint64_t count = 0;
      if (log_bad_frame_.Allow(now, &count)) {
        Log()->info("conn {} (uid {}): framing error, closing: {} ({} in {} s)", c.id, c.peer.uid,
                    fed.error().message(), count,
                    std::chrono::duration_cast<std::chrono::seconds>(kLogEvery).count());
      }
      SendBestEffortAndClose(c, ErrorFrame(0, "ValidationException",
                                           "unreadable request frame: " + fed.error().message()));
      return;
    }
    if (c.decoder.AtBoundary()) {
      c.in_frame = false;
      SetPartial(c, 0);
    } else if (c.decoder.pending() > frames_before) {
      // A frame completed and the next one began within this chunk: restart its clock, and
      // count at most this chunk for it.
      c.frame_start = now;
      SetPartial(c, got);
    } else {
      SetPartial(c, c.partial_bytes + got);
    }
    if (partial_total_ > options_.max_partial_bytes) {
      uint64_t count = 0;
      if (log_budget_.Allow(now, &count)) {
        Log()->warn(
            "unfinished frames hold more than {} bytes: closing conn {} (uid {}) ({} in {} s)",
            options_.max_partial_bytes, c.id, c.peer.uid, count,
            std::chrono::duration_cast<std::chrono::seconds>(kLogEvery).count());
      }
      Close(c.id);
      return;
    }
    if (c.decoder.pending() > 0) {
      Dispatch(c);
      return;
    }
  }
}

void Server::Impl::Dispatch(Connection& c) {
  std::optional<std::string> frame = c.decoder.Next();
  if (!frame) return;
  if (c.decoder.pending() == 0 && c.decoder.AtBoundary()) {
    c.in_frame = false;
    SetPartial(c, 0);
  }
  c.state = Connection::State::kBusy;
  SetInterest(c, 0);  // in order, one at a time: read nothing more until this one is answered
  if (in_flight_ == 0) last_completion_ = Clock::now();  // progress is measured from here
  ++in_flight_;
  const uint64_t id = c.id;
  Principal peer = c.peer;
  const bool queued =
      pool_->Submit([this, id, peer = std::move(peer), frame = std::move(*frame)]() mutable {
        Process(id, peer, std::move(frame));
      });
  if (!queued) {  // only during teardown
    --in_flight_;
    Close(id);
  }
}

namespace {

// The answer frame for `response` (serialized, framed; the plaintext strings wiped), and the
// debug line. Uses nothing of the server: it may run on the audit trail's committer thread.
Completion Finish(uint64_t connection_id, uid_t uid, const std::string& op_name,
                  Clock::time_point started, ipc::Response response, bool close_after) {
  Completion done;
  done.connection_id = connection_id;
  done.close_after = close_after;
  auto payload = ipc::SerializeResponse(response);
  ipc::WipeJsonStrings(response.result);
  if (payload.ok() && payload->size() > ipc::kMaxFrame) {
    crypto::Wipe(*payload);
    Log()->error("conn {}: the {} response exceeds the frame limit", connection_id, op_name);
    payload = Error(Code::kInternal, "response too large");
  }
  if (!payload.ok()) {
    if (response.ok()) {
      Log()->error("conn {}: cannot serialize the {} response: {}", connection_id, op_name,
                   payload.error().message());
    }
    done.frame = ErrorFrame(response.request_id, "KMSInternalException",
                            "internal error in keyd (see its log)");
  } else {
    done.frame = Framed(*payload);
    crypto::Wipe(*payload);
  }
  if (Log()->should_log(spdlog::level::debug)) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
    Log()->debug("conn {}: uid {} {} #{} -> {} ({} us)", connection_id, uid, op_name,
                 response.request_id, response.ok() ? "ok" : response.error->name, us.count());
  }
  return done;
}

// The handler's reply as the protocol's response.
ipc::Response ResponseFor(uint64_t connection_id, const std::string& op_name, uint64_t request_id,
                          ServiceReply reply) {
  ipc::Response response;
  response.request_id = request_id;
  if (reply.ok()) {
    if (!reply.result.is_object()) {
      Log()->error("conn {}: {} returned a non-object result", connection_id, op_name);
      ipc::WipeJsonStrings(reply.result);
      response.error =
          ipc::ErrorInfo{"KMSInternalException", "internal error in keyd (see its log)"};
    } else {
      response.result = std::move(reply.result);
    }
  } else {
    if (!ipc::IsKnownErrorName(reply.error_name)) {
      Log()->error("conn {}: {} returned the unknown error name '{}'", connection_id, op_name,
                   reply.error_name);
      reply.error_name = "KMSInternalException";
    }
    response.error = ipc::ErrorInfo{std::move(reply.error_name), std::move(reply.error_message)};
  }
  return response;
}

}  // namespace

void Server::Impl::Process(uint64_t connection_id, const Principal& peer, std::string frame) {
  const auto started = Clock::now();
  uint64_t request_id = 0;
  auto request = ipc::ParseRequest(frame, &request_id);
  crypto::Wipe(frame);
  if (!request.ok()) {
    // A well-delimited frame that is not a valid request: answer it and keep the connection —
    // unless not even the RequestId could be read, after which the client closes too.
    ipc::Response response;
    response.request_id = request_id;
    response.error = ipc::ErrorInfo{"ValidationException", request.error().message()};
    outbox_->Post(Finish(connection_id, peer.uid, "?", started, std::move(response),
                         /*close_after=*/request_id == 0));
    return;
  }
  const std::string op_name(ipc::OpName(request->op));
  const bool trusted = IsTrustedForwarder(peer.uid, options_.trusted_uids);
  const CallerContext caller =
      BuildCallerContext(peer, request->on_behalf_of, trusted, DescribeProcess);
  // Exactly one answer: the handler's (now, or later from the thread that made its audit record
  // durable), or the one for an exception it let through.
  auto answered = std::make_shared<std::atomic<bool>>(false);
  auto deliver = [box = outbox_, answered, connection_id, uid = peer.uid, op_name,
                  rid = request->request_id, started](ServiceReply reply) {
    if (answered->load()) {  // an exception path answered already
      ipc::WipeJsonStrings(reply.result);
      return;
    }
    Completion done;
    try {
      done = Finish(connection_id, uid, op_name, started,
                    ResponseFor(connection_id, op_name, rid, std::move(reply)),
                    /*close_after=*/false);
    } catch (...) {
      ipc::WipeJsonStrings(reply.result);
      // Out of memory: the smallest answer that still ends the request (ErrorFrame cannot
      // fail short of that too; then the connection closes when keyd stops, as before).
      done.connection_id = connection_id;
      done.close_after = true;
    }
    if (answered->exchange(true)) {
      crypto::Wipe(done.frame);
      return;
    }
    box->Post(std::move(done));
  };
  try {
    handler_.HandleAsync(op_name, request->params, caller, deliver);
  } catch (const std::bad_alloc&) {
    Log()->error("conn {}: {} ran out of memory", connection_id, op_name);
    deliver(ServiceReply::Error("KMSInternalException", "keyd ran out of memory"));
  } catch (const std::exception& e) {
    Log()->error("conn {}: {} threw: {}", connection_id, op_name, e.what());
    deliver(ServiceReply::Error("KMSInternalException", "internal error in keyd (see its log)"));
  } catch (...) {
    Log()->error("conn {}: {} threw a non-standard exception", connection_id, op_name);
    deliver(ServiceReply::Error("KMSInternalException", "internal error in keyd (see its log)"));
  }
  ipc::WipeJsonStrings(request->params);
}

void Server::Impl::OnWake() {
  uint64_t counter = 0;
  [[maybe_unused]] ssize_t n = ::read(wake_fd_.get(), &counter, sizeof counter);
  std::vector<Completion> ready = outbox_->Take();
  const auto now = Clock::now();
  if (!ready.empty()) {
    last_completion_ = now;
    reported_wedged_ = false;
  }
  for (Completion& done : ready) {
    --in_flight_;
    auto it = conns_.find(done.connection_id);
    if (it == conns_.end() || it->second->state != Connection::State::kBusy) {
      crypto::Wipe(done.frame);
      continue;
    }
    Connection& c = *it->second;
    c.out = std::move(done.frame);
    c.out_off = 0;
    c.close_after_write = done.close_after;
    c.state = Connection::State::kWriting;
    c.write_deadline = now + options_.write_timeout;
    TryWrite(c, now);
  }
}

void Server::Impl::TryWrite(Connection& c, Clock::time_point now) {
  while (c.out_off < c.out.size()) {
    const ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out_off += static_cast<size_t>(n);
      continue;
    }
    const int err = n < 0 ? errno : EPIPE;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      SetInterest(c, EPOLLOUT);  // the sweep enforces write_deadline
      return;
    }
    Log()->debug("conn {}: send failed: {}", c.id, std::strerror(err));
    Close(c.id);
    return;
  }
  crypto::Wipe(c.out);
  c.out.clear();
  c.out.shrink_to_fit();
  c.out_off = 0;
  c.last_activity = now;
  if (c.close_after_write || stopping_) {
    Close(c.id);
    return;
  }
  c.state = Connection::State::kReading;
  if (c.in_frame) c.frame_start = now;  // its bytes waited on us, not on the client
  if (c.decoder.pending() > 0) {
    Dispatch(c);  // a pipelined request arrived with the previous one
    return;
  }
  SetInterest(c, EPOLLIN | EPOLLRDHUP);
}

void Server::Impl::SendBestEffortAndClose(Connection& c, std::string frame) {
  [[maybe_unused]] ssize_t n =
      ::send(c.fd.get(), frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  Close(c.id);
}

void Server::Impl::Sweep(Clock::time_point now) {
  if (accept_paused_ && now >= accept_resume_at_) ResumeAccepting();
  std::vector<std::pair<uint64_t, const char*>> expired;
  for (auto& [id, cp] : conns_) {
    Connection& c = *cp;
    if (c.state == Connection::State::kReading) {
      if (c.in_frame && now - c.frame_start > options_.frame_timeout) {
        expired.emplace_back(id, "did not finish a frame within the frame timeout");
      } else if (!c.in_frame && c.decoder.pending() == 0 &&
                 now - c.last_activity > options_.idle_timeout && !HasInput(c.fd.get())) {
        expired.emplace_back(id, nullptr);  // idle: normal, debug only
      }
    } else if (c.state == Connection::State::kWriting && now > c.write_deadline) {
      expired.emplace_back(id, "did not read its response within the write timeout");
    }
  }
  for (const auto& [id, why] : expired) {
    if (why == nullptr) {
      Log()->debug("conn {}: idle for {} ms, closing", id, options_.idle_timeout.count());
    } else {
      uint64_t count = 0;
      if (log_slow_.Allow(now, &count)) {
        Log()->info("closing conn {} (uid {}): the client {} ({} slow client(s) in {} s)", id,
                    conns_.at(id)->peer.uid, why, count,
                    std::chrono::duration_cast<std::chrono::seconds>(kLogEvery).count());
      }
    }
    Close(id);
  }
}

void Server::Impl::MaybeRunScheduler(Clock::time_point /*now*/) {
  bool expected = false;
  if (!scheduler_running_.compare_exchange_strong(expected, true)) return;  // previous still runs
  const bool queued = pool_->Submit([this] {
    try {
      options_.scheduler();
    } catch (const std::exception& e) {
      Log()->error("scheduler threw: {}", e.what());
    } catch (...) {
      Log()->error("scheduler threw a non-standard exception");
    }
    scheduler_running_.store(false);
  });
  if (!queued) scheduler_running_.store(false);
}

Status Server::BlockStopSignals() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  const int err = ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  if (err != 0) return Error::FromErrno("pthread_sigmask", err);
  return Status::Ok();
}

Result<std::unique_ptr<Server>> Server::Create(int listen_fd, KmsHandler& handler,
                                               ServerOptions options) {
  auto impl = std::make_unique<Impl>(listen_fd, handler, std::move(options));
  KMSFS_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

Status Server::Run() { return impl_->Run(); }
void Server::Stop() { impl_->Stop(); }

}  // namespace kmsfs::keyd
