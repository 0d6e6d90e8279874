// FakeKeyd: an in-test keyd stand-in on a real Unix socket, scripted per request.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "common/base/unique_fd.h"
#include "common/ipc/frame.h"
#include "common/ipc/message.h"
#include "common/ipc/unix_socket.h"

namespace kmsfs::ipc::testing {

// What the fake does with one request.
struct Action {
  enum Kind { kRespond, kSilent, kClose, kRaw } kind = kRespond;
  std::string bytes;  // kRespond: a serialized Response (framed by the fake); kRaw: sent as is

  static Action Ok(const Request& req, nlohmann::json result) {
    Response r;
    r.request_id = req.request_id;
    r.result = std::move(result);
    return {kRespond, SerializeResponse(r).value()};
  }
  static Action Fail(const Request& req, std::string name, std::string message) {
    Response r;
    r.request_id = req.request_id;
    r.error = ErrorInfo{std::move(name), std::move(message)};
    return {kRespond, SerializeResponse(r).value()};
  }
  static Action Silent() { return {kSilent, {}}; }
  static Action Close() { return {kClose, {}}; }
  static Action Raw(std::string bytes) { return {kRaw, std::move(bytes)}; }
};

// Serves one connection at a time on its own thread, through the incremental FrameDecoder (the
// server-side API). The handler runs on that thread; requests() counts complete request frames.
class FakeKeyd {
 public:
  using Handler = std::function<Action(const Request&)>;

  FakeKeyd(std::string path, Handler handler) : path_(std::move(path)), handler_(std::move(handler)) {
    auto l = UnixListen(path_, 16, 0666);
    if (!l.ok()) return;
    listener_ = std::move(l).value();
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeKeyd() { Stop(); }
  FakeKeyd(const FakeKeyd&) = delete;
  FakeKeyd& operator=(const FakeKeyd&) = delete;

  bool ok() const { return listener_.valid(); }
  int requests() const { return requests_.load(); }
  // The last request parsed (copy), for checking what the client sent.
  std::optional<Request> last_request() {
    std::lock_guard lock(mu_);
    return last_;
  }
  // Stops serving and closes every socket; the socket file stays (like a crashed keyd).
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    listener_.Reset();
  }

 private:
  void Serve() {
    while (!stop_) {
      auto conn = UnixAccept(listener_.get(), Deadline::After(std::chrono::milliseconds(20)));
      if (!conn.ok()) continue;
      ServeConnection(conn->get());
    }
  }

  void ServeConnection(int fd) {
    FrameDecoder decoder;
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return;
      if (!decoder.Feed(std::string_view(buf, static_cast<size_t>(n))).ok()) return;
      while (auto frame = decoder.Next()) {
        ++requests_;
        auto req = ParseRequest(*frame);
        if (!req.ok()) return;
        {
          std::lock_guard lock(mu_);
          last_ = *req;
        }
        const Action a = handler_(*req);
        switch (a.kind) {
          case Action::kRespond:
            if (!WriteFrame(fd, a.bytes, Deadline::After(std::chrono::seconds(5))).ok()) return;
            break;
          case Action::kSilent:
            break;
          case Action::kClose:
            return;
          case Action::kRaw:
            ::send(fd, a.bytes.data(), a.bytes.size(), MSG_NOSIGNAL);
            break;
        }
      }
    }
  }

  const std::string path_;
  const Handler handler_;
  UniqueFd listener_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::optional<Request> last_;  // guarded by mu_
};

}  // namespace kmsfs::ipc::testing
