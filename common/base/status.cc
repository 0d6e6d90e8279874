#include "common/base/status.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kmsfs {
namespace internal {
void CheckFailed(const char* file, int line, const char* expr) noexcept {
  std::fprintf(stderr, "kmsfs: CHECK failed at %s:%d: %s\n", file, line, expr);
  std::fflush(stderr);
  std::abort();
}
}  // namespace internal

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "kOk";
    case Code::kNotFound: return "kNotFound";
    case Code::kAlreadyExists: return "kAlreadyExists";
    case Code::kInvalidArgument: return "kInvalidArgument";
    case Code::kPermissionDenied: return "kPermissionDenied";
    case Code::kKeyUnavailable: return "kKeyUnavailable";
    case Code::kCorrupt: return "kCorrupt";
    case Code::kIo: return "kIo";
    case Code::kUnavailable: return "kUnavailable";
    case Code::kFailedPrecondition: return "kFailedPrecondition";
    case Code::kInternal: return "kInternal";
  }
  return "kUnknown";
}

Error Error::FromErrno(std::string_view what, int err) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  return Error(Code::kIo, std::move(msg), err);
}

std::string Error::ToString() const {
  std::string s(CodeName(code_));
  s += ": ";
  s += message_;
  if (sys_errno_ != 0) {
    s += " (errno ";
    s += std::to_string(sys_errno_);
    s += ")";
  }
  return s;
}

}  // namespace kmsfs
