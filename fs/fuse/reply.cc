#include "fs/fuse/reply.h"

#include <atomic>
#include <chrono>

#include "common/log/log.h"

namespace kmsfs::fs {
namespace {

std::shared_ptr<spdlog::logger> Logger() {
  static const auto kLogger = log::Get("fs.fuse");
  return kLogger;
}

// One warn line per burst: the first failure logs, later ones within kBurst are counted and
// reported with the next line after the burst.
class BurstLimiter {
 public:
  // Returns true if this failure should be logged; *suppressed receives the count skipped since.
  bool ShouldLog(uint64_t* suppressed) {
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                            .count();
    int64_t last = last_ms_.load(std::memory_order_relaxed);
    if (last != 0 && now - last < kBurstMs) {
      skipped_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (!last_ms_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
      skipped_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    *suppressed = skipped_.exchange(0, std::memory_order_relaxed);
    return true;
  }

 private:
  static constexpr int64_t kBurstMs = 10000;
  std::atomic<int64_t> last_ms_{0};
  std::atomic<uint64_t> skipped_{0};
};

BurstLimiter g_key_unavailable;
BurstLimiter g_keyd_unavailable;
BurstLimiter g_denied;

}  // namespace

void LogFailure(const char* op, uint64_t backing_ino, const Error& error) {
  switch (error.code()) {
    case Code::kOk:
    case Code::kNotFound:
    case Code::kAlreadyExists:
    case Code::kInvalidArgument:
      return;
    case Code::kIo:
    case Code::kFailedPrecondition:
      Logger()->debug("{} (inode {}): {}", op, backing_ino, error.ToString());
      return;
    case Code::kPermissionDenied: {
      // The message carries keyd's reason (policy Sid) and never the path. Once per burst: a
      // process reading in a loop through a revoked handle fails every read.
      uint64_t suppressed = 0;
      if (!g_denied.ShouldLog(&suppressed)) return;
      Logger()->info("{} (inode {}) denied: {} ({} similar before not logged)", op, backing_ino,
                     error.message(), suppressed);
      return;
    }
    case Code::kKeyUnavailable:
    case Code::kUnavailable: {
      auto& limiter =
          error.code() == Code::kKeyUnavailable ? g_key_unavailable : g_keyd_unavailable;
      uint64_t suppressed = 0;
      if (!limiter.ShouldLog(&suppressed)) return;
      if (suppressed != 0) {
        Logger()->warn("{} (inode {}): {} ({} similar failures not logged)", op, backing_ino,
                       error.message(), suppressed);
      } else {
        Logger()->warn("{} (inode {}): {}", op, backing_ino, error.message());
      }
      return;
    }
    case Code::kCorrupt:
      Logger()->warn("{}: backing inode {} failed authentication: {}", op, backing_ino,
                     error.message());
      return;
    case Code::kInternal:
      Logger()->error("{} (inode {}): {}", op, backing_ino, error.ToString());
      return;
  }
}

void LogBug(const char* op, const char* what) {
  Logger()->error("{}: unexpected exception: {}", op, what);
}

}  // namespace kmsfs::fs
