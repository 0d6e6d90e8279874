// KMSFS_CHECK: broken invariants are bugs and abort loudly with file:line.
#pragma once

namespace kmsfs::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr) noexcept;
}  // namespace kmsfs::internal

#define KMSFS_CHECK(cond) \
  ((cond) ? static_cast<void>(0) : ::kmsfs::internal::CheckFailed(__FILE__, __LINE__, #cond))
