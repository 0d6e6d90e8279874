#include "common/ipc/deadline.h"

#include <climits>

namespace kmsfs::ipc {

Deadline Deadline::After(std::chrono::milliseconds d) {
  const auto now = Clock::now();
  if (d > std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - now)) {
    return Never();
  }
  return Deadline(now + d);
}

int Deadline::PollTimeoutMs() const {
  if (IsNever()) return -1;
  const auto now = Clock::now();
  if (now >= when_) return 0;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(when_ - now).count();
  return left > INT_MAX ? INT_MAX : static_cast<int>(left);
}

std::chrono::milliseconds Deadline::Remaining() const {
  if (IsNever()) return std::chrono::milliseconds::max();
  const auto now = Clock::now();
  if (now >= when_) return std::chrono::milliseconds(0);
  return std::chrono::ceil<std::chrono::milliseconds>(when_ - now);
}

}  // namespace kmsfs::ipc
