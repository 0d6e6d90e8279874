// Error names on the keyd wire (AWS KMS style) and their mapping to kmsfs::Code, errno and exit codes.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "common/base/status.h"

namespace kmsfs::ipc {

// The "Error" object of a response: {"Name": "NotFoundException", "Message": "..."}.
struct ErrorInfo {
  std::string name;
  std::string message;
  bool operator==(const ErrorInfo&) const = default;
};

// The single table of docs/errors.md lives in errors.cc; a unit test checks that the two agree.

// The name an error with `code` is sent under unless it names a more specific one (see
// ErrorNameOf). "" for kOk, which is not an error.
std::string_view ErrorNameForCode(Code code);
// The code of a wire name. A name this build does not know (a newer keyd) is kInternal, so an
// unexpected error is never mistaken for a benign one.
Code CodeForErrorName(std::string_view name);
bool IsKnownErrorName(std::string_view name);
// Every known name, in the order of docs/errors.md.
std::span<const std::string_view> KnownErrorNames();

// Error(CodeForErrorName(name), "Name: message"). How keyd's service says *which* name it means
// when the code alone is ambiguous (DisabledException vs KMSInvalidStateException), and how the
// client presents a remote error ("NotFoundException: alias/x is not found").
Error NamedError(std::string_view name, std::string_view message);
// The wire name of `e`: the "XxxException: " prefix of its message when that is a known name whose
// code equals e.code(), else ErrorNameForCode(e.code()). Lets kmsctl print and exit by name, and
// lets the client's local failures (keyd unreachable) read as DependencyTimeoutException.
std::string_view ErrorNameOf(const Error& e);
// e.message() without that prefix.
std::string_view ErrorMessageOf(const Error& e);

// Server side: the Error object to send for `e` (name per ErrorNameOf, message without prefix).
ErrorInfo ToErrorInfo(const Error& e);
// Client side: NamedError(info.name, message), where the peer's message is made safe for a log
// line: control characters become '?', and it is cut at 1024 bytes (on a UTF-8 boundary).
Error FromErrorInfo(const ErrorInfo& info);

// The errno the filesystem answers for `e` (docs/errors.md): kIo gives back the saved OS errno
// (EIO if none), kKeyUnavailable ENOKEY, kUnavailable EHOSTDOWN, ... fs/fuse's reply helper is
// meant to call this, so the table exists once.
int ErrnoForError(const Error& e);
// The kmsctl exit status for `code` (0 for kOk; 1..8, see docs/errors.md).
int ExitCodeForCode(Code code);

}  // namespace kmsfs::ipc
