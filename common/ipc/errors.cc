#include "common/ipc/errors.h"

#include <array>
#include <cerrno>

namespace kmsfs::ipc {
namespace {

struct NameEntry {
  std::string_view name;
  Code code;
};

// docs/errors.md, table 1. The first entry for a code is its default name (ErrorNameForCode).
constexpr std::array kNames = {
    NameEntry{"NotFoundException", Code::kNotFound},
    NameEntry{"AlreadyExistsException", Code::kAlreadyExists},
    NameEntry{"ValidationException", Code::kInvalidArgument},
    NameEntry{"AccessDeniedException", Code::kPermissionDenied},
    NameEntry{"KMSInvalidStateException", Code::kKeyUnavailable},
    NameEntry{"DisabledException", Code::kKeyUnavailable},
    NameEntry{"KeyUnavailableException", Code::kKeyUnavailable},
    NameEntry{"InvalidCiphertextException", Code::kCorrupt},
    NameEntry{"IncorrectKeyException", Code::kCorrupt},
    NameEntry{"DependencyTimeoutException", Code::kUnavailable},
    NameEntry{"LimitExceededException", Code::kUnavailable},
    NameEntry{"KMSInternalException", Code::kInternal},
    NameEntry{"UnsupportedOperationException", Code::kFailedPrecondition},
};

constexpr std::array<std::string_view, kNames.size()> MakeNameList() {
  std::array<std::string_view, kNames.size()> out{};
  for (size_t i = 0; i < kNames.size(); ++i) out[i] = kNames[i].name;
  return out;
}
constexpr auto kNameList = MakeNameList();

constexpr size_t kMaxRemoteMessage = 1024;

// If `message` starts with "<known name>: ", that name; else "".
std::string_view PrefixName(std::string_view message) {
  const size_t colon = message.find(": ");
  if (colon == std::string_view::npos) return {};
  const std::string_view head = message.substr(0, colon);
  return IsKnownErrorName(head) ? head : std::string_view();
}

}  // namespace

std::string_view ErrorNameForCode(Code code) {
  switch (code) {
    case Code::kOk:
      return "";
    // kIo is an OS failure inside keyd; the client cannot act on keyd's errno, so it is internal.
    case Code::kIo:
    case Code::kInternal:
      return "KMSInternalException";
    default:
      break;
  }
  for (const auto& e : kNames) {
    if (e.code == code) return e.name;
  }
  return "KMSInternalException";
}

Code CodeForErrorName(std::string_view name) {
  for (const auto& e : kNames) {
    if (e.name == name) return e.code;
  }
  return Code::kInternal;
}

bool IsKnownErrorName(std::string_view name) {
  for (const auto& e : kNames) {
    if (e.name == name) return true;
  }
  return false;
}

std::span<const std::string_view> KnownErrorNames() { return kNameList; }

Error NamedError(std::string_view name, std::string_view message) {
  std::string text(name);
  text += ": ";
  text += message;
  return Error(CodeForErrorName(name), std::move(text));
}

std::string_view ErrorNameOf(const Error& e) {
  const std::string_view prefix = PrefixName(e.message());
  if (!prefix.empty() && CodeForErrorName(prefix) == e.code()) return prefix;
  return ErrorNameForCode(e.code());
}

std::string_view ErrorMessageOf(const Error& e) {
  const std::string_view msg = e.message();
  const std::string_view prefix = PrefixName(msg);
  if (prefix.empty() || CodeForErrorName(prefix) != e.code()) return msg;
  return msg.substr(prefix.size() + 2);
}

ErrorInfo ToErrorInfo(const Error& e) {
  std::string_view name = ErrorNameOf(e);
  if (name.empty()) name = "KMSInternalException";  // an Error holding kOk is a bug; never send ""
  return ErrorInfo{std::string(name), std::string(ErrorMessageOf(e))};
}

Error FromErrorInfo(const ErrorInfo& info) {
  std::string_view raw = info.message;
  if (raw.size() > kMaxRemoteMessage) {
    size_t cut = kMaxRemoteMessage;
    // Back up over UTF-8 continuation bytes so the cut does not split a character.
    while (cut > 0 && (static_cast<unsigned char>(raw[cut]) & 0xC0) == 0x80) --cut;
    raw = raw.substr(0, cut);
  }
  std::string clean;
  clean.reserve(raw.size() + 4);
  for (char c : raw) {
    const auto u = static_cast<unsigned char>(c);
    clean.push_back(u < 0x20 || u == 0x7F ? '?' : c);
  }
  if (raw.size() < info.message.size()) clean += "...";
  return NamedError(info.name, clean);
}

int ErrnoForError(const Error& e) {
  switch (e.code()) {
    case Code::kOk: return 0;
    case Code::kNotFound: return ENOENT;
    case Code::kAlreadyExists: return EEXIST;
    case Code::kInvalidArgument: return e.sys_errno() != 0 ? e.sys_errno() : EINVAL;  // ENAMETOOLONG, EFBIG...
    case Code::kPermissionDenied: return EACCES;
    case Code::kKeyUnavailable: return ENOKEY;
    case Code::kCorrupt: return EIO;
    case Code::kIo: return e.sys_errno() != 0 ? e.sys_errno() : EIO;
    case Code::kUnavailable: return EHOSTDOWN;
    case Code::kFailedPrecondition: return EOPNOTSUPP;
    case Code::kInternal: return EIO;
  }
  return EIO;
}

int ExitCodeForCode(Code code) {
  switch (code) {
    case Code::kOk: return 0;
    case Code::kInvalidArgument: return 2;
    case Code::kNotFound: return 3;
    case Code::kPermissionDenied: return 4;
    case Code::kKeyUnavailable: return 5;
    case Code::kCorrupt: return 6;
    case Code::kUnavailable: return 7;
    case Code::kAlreadyExists: return 8;
    case Code::kIo:
    case Code::kFailedPrecondition:
    case Code::kInternal: return 1;
  }
  return 1;
}

}  // namespace kmsfs::ipc
