// Deadline: an absolute point on the monotonic clock that bounds every blocking ipc call.
#pragma once

#include <chrono>

namespace kmsfs::ipc {

// Absolute rather than relative, so a call made of several steps (lock, connect, write, read)
// cannot exceed its budget by restarting a timeout at each step, and a peer that trickles one byte
// per second cannot extend it. Uses steady_clock: wall-clock jumps neither fire nor postpone it.
// A value type; thread-compatible.
class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  // now + d, saturating to Never() instead of overflowing; a negative d is already expired.
  static Deadline After(std::chrono::milliseconds d);
  static Deadline At(Clock::time_point t) { return Deadline(t); }
  // Never expires. For callers that really want to block (tests, a server's idle read).
  static Deadline Never() { return Deadline(Clock::time_point::max()); }

  bool IsNever() const { return when_ == Clock::time_point::max(); }
  bool Expired() const { return !IsNever() && Clock::now() >= when_; }
  Clock::time_point when() const { return when_; }
  // The earlier of the two.
  Deadline Min(Deadline other) const { return other.when_ < when_ ? other : *this; }

  // The timeout argument for poll(2): -1 for Never, 0 when expired, else the remaining
  // milliseconds rounded *up* (rounding down would spin on sub-millisecond remainders) and capped
  // at INT_MAX.
  int PollTimeoutMs() const;
  // Remaining time for messages ("timed out after 250 ms"); 0 when expired.
  std::chrono::milliseconds Remaining() const;

 private:
  explicit Deadline(Clock::time_point when) : when_(when) {}
  Clock::time_point when_;
};

}  // namespace kmsfs::ipc
