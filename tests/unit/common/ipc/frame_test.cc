#include "common/ipc/frame.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

#include "common/base/bytes.h"
#include "common/base/unique_fd.h"
#include "tests/catch.h"
#include "tests/unit/common/ipc/test_util.h"

namespace kmsfs::ipc {
namespace {

using std::chrono::milliseconds;
using testing::MsSince;

struct Pair {
  UniqueFd a, b;
};

Pair SocketPair() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void SendRaw(int fd, std::string_view bytes) {
  REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

std::string Header(uint32_t len) {
  uint8_t h[4];
  PutU32(h, len);
  return std::string(reinterpret_cast<const char*>(h), 4);
}

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

TEST_CASE("frames round-trip over a socketpair", "[ipc][frame]") {
  Pair pair = SocketPair();
  UniqueFd& a = pair.a;
  UniqueFd& b = pair.b;
  SECTION("small frames, one at a time and back to back") {
    REQUIRE(WriteFrame(a.get(), "{}", Deadline::After(milliseconds(1000))).ok());
    REQUIRE(WriteFrame(a.get(), R"({"Op":"Ping"})", Deadline::After(milliseconds(1000))).ok());
    REQUIRE(WriteFrame(a.get(), "x", Deadline::After(milliseconds(1000))).ok());
    auto f1 = ReadFrame(b.get(), Deadline::After(milliseconds(1000)));
    auto f2 = ReadFrame(b.get(), Deadline::After(milliseconds(1000)));
    auto f3 = ReadFrame(b.get(), Deadline::After(milliseconds(1000)));
    REQUIRE(f1.ok());
    REQUIRE(f2.ok());
    REQUIRE(f3.ok());
    CHECK(*f1 == "{}");
    CHECK(*f2 == R"({"Op":"Ping"})");
    CHECK(*f3 == "x");
    CHECK_FALSE(Readable(b.get()));  // ReadFrame never reads past its frame
  }
  SECTION("a kMaxFrame frame needs several partial writes and reads") {
    std::string big(kMaxFrame, 'q');
    big.front() = '{';
    big.back() = '}';
    Status sent;  // Catch2 v2 assertions are not thread-safe: check after join
    std::thread writer([&] { sent = WriteFrame(a.get(), big, Deadline::After(milliseconds(5000))); });
    auto got = ReadFrame(b.get(), Deadline::After(milliseconds(5000)));
    writer.join();
    REQUIRE(sent.ok());
    REQUIRE(got.ok());
    CHECK(*got == big);
  }
  SECTION("a blocking fd works too (MSG_DONTWAIT per call)") {
    REQUIRE(WriteFrame(a.get(), "abc", Deadline::Never()).ok());
    auto got = ReadFrame(b.get(), Deadline::Never());
    REQUIRE(got.ok());
    CHECK(*got == "abc");
  }
}

TEST_CASE("WriteFrame rejects empty and oversized payloads before sending", "[ipc][frame]") {
  Pair pair = SocketPair();
  UniqueFd& a = pair.a;
  UniqueFd& b = pair.b;
  auto empty = WriteFrame(a.get(), "", Deadline::After(milliseconds(100)));
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.code() == Code::kInvalidArgument);
  const std::string too_big(kMaxFrame + 1, 'x');
  auto big = WriteFrame(a.get(), too_big, Deadline::After(milliseconds(100)));
  REQUIRE_FALSE(big.ok());
  CHECK(big.code() == Code::kInvalidArgument);
  CHECK_FALSE(Readable(b.get()));
}

TEST_CASE("ReadFrame rejects bad lengths before allocating", "[ipc][frame]") {
  Pair pair = SocketPair();
  UniqueFd& a = pair.a;
  UniqueFd& b = pair.b;
  SECTION("zero length") {
    SendRaw(a.get(), Header(0));
    auto r = ReadFrame(b.get(), Deadline::After(milliseconds(500)));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kCorrupt);
  }
  SECTION("kMaxFrame + 1") {
    SendRaw(a.get(), Header(kMaxFrame + 1) + "payload that must stay unread");
    auto r = ReadFrame(b.get(), Deadline::After(milliseconds(500)));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kCorrupt);
    CHECK(r.error().message().find("262144") != std::string::npos);
    CHECK(Readable(b.get()));  // only the header was consumed
  }
  SECTION("4 GiB announced: an allocation would abort or OOM, a check returns at once") {
    SendRaw(a.get(), Header(0xFFFFFFFFu));
    auto start = std::chrono::steady_clock::now();
    auto r = ReadFrame(b.get(), Deadline::After(milliseconds(500)));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kCorrupt);
    CHECK(MsSince(start) < 400);
  }
  SECTION("a caller's smaller limit") {
    SendRaw(a.get(), Header(11) + std::string(11, 'x'));
    auto r = ReadFrame(b.get(), Deadline::After(milliseconds(500)), /*max_frame=*/10);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kCorrupt);
  }
}

TEST_CASE("half a frame then silence times out within the deadline", "[ipc][frame]") {
  Pair pair = SocketPair();
  UniqueFd& a = pair.a;
  UniqueFd& b = pair.b;
  SECTION("half a header") { SendRaw(a.get(), Header(10).substr(0, 2)); }
  SECTION("header and half the payload") { SendRaw(a.get(), Header(10) + "12345"); }
  SECTION("nothing at all") {}
  const auto start = std::chrono::steady_clock::now();
  auto r = ReadFrame(b.get(), Deadline::After(milliseconds(200)));
  const auto elapsed = MsSince(start);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kUnavailable);
  CHECK(r.error().sys_errno() == ETIMEDOUT);
  CHECK(elapsed >= 195);
  CHECK(elapsed < 1500);
}

TEST_CASE("EOF: clean between frames, an error inside one", "[ipc][frame]") {
  Pair pair = SocketPair();
  UniqueFd& a = pair.a;
  UniqueFd& b = pair.b;
  SECTION("clean") {
    a.Reset();
    auto r = ReadFrame(b.get(), Deadline::After(milliseconds(500)));
    REQUIRE_FALSE(r.ok());
    CHECK(IsCleanClose(r.error()));
  }
  SECTION("mid-frame") {
    SendRaw(a.get(), Header(10) + "123");
    a.Reset();
    auto r = ReadFrame(b.get(), Deadline::After(milliseconds(500)));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kUnavailable);
    CHECK_FALSE(IsCleanClose(r.error()));
  }
}

TEST_CASE("WriteFrame: a gone peer is kUnavailable without SIGPIPE; a stalled one times out",
          "[ipc][frame]") {
  Pair pair = SocketPair();
  UniqueFd& a = pair.a;
  UniqueFd& b = pair.b;
  SECTION("peer closed (the test process would die of SIGPIPE otherwise)") {
    b.Reset();
    auto s = WriteFrame(a.get(), "hello", Deadline::After(milliseconds(500)));
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == Code::kUnavailable);
    CHECK(s.error().sys_errno() == EPIPE);
  }
  SECTION("peer never reads") {
    const std::string chunk(kMaxFrame, 'z');
    Status s;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 64 && s.ok(); ++i) s = WriteFrame(a.get(), chunk, Deadline::After(milliseconds(200)));
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == Code::kUnavailable);
    CHECK(s.error().sys_errno() == ETIMEDOUT);
    CHECK(MsSince(start) < 3000);
  }
}

std::atomic<int> g_signals{0};
void CountSignal(int) { g_signals.fetch_add(1, std::memory_order_relaxed); }

TEST_CASE("blocking reads and writes survive EINTR", "[ipc][frame]") {
  struct sigaction sa {};
  sa.sa_handler = CountSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll and recv really return EINTR
  struct sigaction old {};
  REQUIRE(::sigaction(SIGUSR1, &sa, &old) == 0);
  Pair pair = SocketPair();
  UniqueFd& a = pair.a;
  UniqueFd& b = pair.b;
  g_signals = 0;

  SECTION("reader") {
    Result<std::string> got = Error(Code::kInternal, "not run");
    std::thread reader([&] { got = ReadFrame(b.get(), Deadline::After(milliseconds(5000))); });
    const pthread_t tid = reader.native_handle();
    for (int i = 0; i < 20; ++i) {
      ::pthread_kill(tid, SIGUSR1);
      std::this_thread::sleep_for(milliseconds(5));
      if (i == 10) SendRaw(a.get(), Header(5) + "ab");  // half, then more signals
    }
    SendRaw(a.get(), "cde");
    reader.join();
    REQUIRE(got.ok());
    CHECK(*got == "abcde");
  }
  SECTION("writer") {
    const std::string big(kMaxFrame, 'w');
    Status sent = Error(Code::kInternal, "not run");
    std::thread writer([&] { sent = WriteFrame(a.get(), big, Deadline::After(milliseconds(5000))); });
    const pthread_t tid = writer.native_handle();
    for (int i = 0; i < 10; ++i) {
      ::pthread_kill(tid, SIGUSR1);
      std::this_thread::sleep_for(milliseconds(5));
    }
    auto got = ReadFrame(b.get(), Deadline::After(milliseconds(5000)));
    writer.join();
    REQUIRE(sent.ok());
    REQUIRE(got.ok());
    CHECK(*got == big);
  }
  CHECK(g_signals.load() > 0);
  ::sigaction(SIGUSR1, &old, nullptr);
}

TEST_CASE("FrameDecoder reassembles frames from any chunking", "[ipc][frame]") {
  const std::string stream = Header(3) + "one" + Header(1) + "2" + Header(5) + "three";
  SECTION("byte by byte") {
    FrameDecoder d;
    for (size_t i = 0; i < stream.size(); ++i) {
      REQUIRE(d.Feed(stream.substr(i, 1)).ok());
      if (i == 0 || i == 5) CHECK_FALSE(d.AtBoundary());  // in a header, in a payload
      if (i == 6) CHECK(d.AtBoundary());
    }
    CHECK(d.AtBoundary());
    REQUIRE(d.pending() == 3);
    CHECK(d.Next() == std::optional<std::string>("one"));
    CHECK(d.Next() == std::optional<std::string>("2"));
    CHECK(d.Next() == std::optional<std::string>("three"));
    CHECK_FALSE(d.Next().has_value());
  }
  SECTION("all at once, then a partial header") {
    FrameDecoder d;
    REQUIRE(d.Feed(stream + Header(9).substr(0, 3)).ok());
    CHECK(d.pending() == 3);
    CHECK_FALSE(d.AtBoundary());
  }
}

TEST_CASE("FrameDecoder poisons itself on a bad length", "[ipc][frame]") {
  SECTION("oversized, after a good frame") {
    FrameDecoder d;
    auto s = d.Feed(Header(2) + "ok" + Header(kMaxFrame + 1));
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == Code::kCorrupt);
    CHECK(d.poisoned());
    CHECK(d.Next() == std::optional<std::string>("ok"));  // frames before the bad header stay
    CHECK_FALSE(d.Feed(Header(1) + "x").ok());             // and nothing after it is accepted
    CHECK_FALSE(d.Next().has_value());
  }
  SECTION("zero") {
    FrameDecoder d;
    CHECK(d.Feed(Header(0)).code() == Code::kCorrupt);
  }
  SECTION("a smaller per-decoder limit") {
    FrameDecoder d(16);
    CHECK(d.Feed(Header(16) + std::string(16, 'a')).ok());
    CHECK(d.Feed(Header(17)).code() == Code::kCorrupt);
  }
}

}  // namespace
}  // namespace kmsfs::ipc
