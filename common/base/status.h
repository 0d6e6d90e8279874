// Status and Result<T>: expected failures as values (std::expected is not in C++20 here).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "common/base/check.h"

namespace kmsfs {

// The small set of outcomes every layer speaks. The mapping to errno (fs), AWS-style exception
// names (keyd protocol) and exit codes (kmsctl) is documented in docs/errors.md.
enum class Code : uint8_t {
  kOk = 0,
  kNotFound,
  kAlreadyExists,
  kInvalidArgument,
  kPermissionDenied,
  kKeyUnavailable,  // key disabled, pending deletion, destroyed, or keyd unreachable
  kCorrupt,         // authentication failed, malformed on-disk or wire data
  kIo,              // the OS said no; sys_errno() holds what it said
  kUnavailable,     // transient: peer gone, timeout, resource exhausted
  kFailedPrecondition,
  kInternal,
};

std::string_view CodeName(Code code);

// An error: a code, the OS errno when it came from the OS (0 otherwise), and a message.
// The message must never contain key bytes or plaintext file names/contents.
class Error {
 public:
  Error(Code code, std::string message, int sys_errno = 0)
      : code_(code), sys_errno_(sys_errno), message_(std::move(message)) {}

  // An error from a failed syscall: `what` names the call and object, errno is kept.
  static Error FromErrno(std::string_view what, int err);

  Code code() const { return code_; }
  int sys_errno() const { return sys_errno_; }
  const std::string& message() const { return message_; }
  // "kCorrupt: header tag mismatch (errno 5)" — for logs and CLI output.
  std::string ToString() const;

 private:
  Code code_;
  int sys_errno_;
  std::string message_;
};

// A Status is either OK or an Error. Must be inspected.
class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design

  static Status Ok() { return Status(); }
  bool ok() const { return ok_; }
  // REQUIRES: !ok().
  const Error& error() const {
    KMSFS_CHECK(!ok_);
    return error_;
  }
  Code code() const { return ok_ ? Code::kOk : error_.code(); }
  std::string ToString() const { return ok_ ? "OK" : error_.ToString(); }

 private:
  Error error_{Code::kOk, ""};
  bool ok_ = true;
};

// Result<T>: a value or an Error. Must be inspected; value() on an error aborts.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT
  Result(Status status) : v_(status.error()) {}  // NOLINT; REQUIRES: !status.ok()

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    KMSFS_CHECK(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    KMSFS_CHECK(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    KMSFS_CHECK(ok());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // REQUIRES: !ok().
  const Error& error() const {
    KMSFS_CHECK(!ok());
    return std::get<1>(v_);
  }
  Status status() const { return ok() ? Status() : Status(error()); }

 private:
  std::variant<T, Error> v_;
};

}  // namespace kmsfs

// Propagate a failed Status/Result from the current function.
#define KMSFS_RETURN_IF_ERROR(expr)                 \
  do {                                              \
    auto kmsfs_status_ = (expr);                    \
    if (!kmsfs_status_.ok()) return kmsfs_status_.error(); \
  } while (0)

#define KMSFS_CONCAT_INNER_(a, b) a##b
#define KMSFS_CONCAT_(a, b) KMSFS_CONCAT_INNER_(a, b)
// KMSFS_ASSIGN_OR_RETURN(auto x, F()); — binds the value or returns the error.
#define KMSFS_ASSIGN_OR_RETURN(lhs, expr) \
  KMSFS_ASSIGN_OR_RETURN_IMPL_(KMSFS_CONCAT_(kmsfs_result_, __LINE__), lhs, expr)
#define KMSFS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.error();                 \
  lhs = std::move(tmp).value()
