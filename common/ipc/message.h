// Request and Response: the JSON messages of the keyd protocol, parsed strictly (docs/protocol.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/base/status.h"
#include "common/ipc/errors.h"
#include "common/ipc/operation.h"

namespace kmsfs::ipc {

// Limits a hostile peer cannot exceed (besides kMaxFrame). Depth bounds recursion in every later
// walk of Params (nlohmann's dump and copy recurse); real KMS requests and policies nest < 10.
inline constexpr size_t kMaxJsonDepth = 32;
inline constexpr size_t kMaxPathLen = 4096;       // PATH_MAX, in bytes of UTF-8
inline constexpr size_t kMaxErrorNameLen = 128;

// The process the filesystem is asking for (the one that opened the file), and the file's path
// inside the volume. Only advisory on the wire: keyd honours it only from a trusted peer and
// otherwise uses the peer's own SO_PEERCRED identity (docs/threat-model.md, A3).
struct OnBehalfOf {
  uint32_t uid = 0;  // 0..2^32-2 ((uid_t)-1 means "no user" and is rejected)
  uint32_t gid = 0;
  int32_t pid = 0;   // 1..2^31-1
  // "" = no path (not about one file). Otherwise canonical, see IsCanonicalVolumePath.
  std::string path;
  bool operator==(const OnBehalfOf&) const = default;
};

struct Request {
  Op op = Op::kPing;
  uint64_t request_id = 0;  // chosen by the client, echoed in the response; 0 is reserved
  nlohmann::json params = nlohmann::json::object();  // always an object
  std::optional<OnBehalfOf> on_behalf_of;
};

// Exactly one of `result` (ok) and `error` is meaningful: when `error` is set, `result` is ignored.
struct Response {
  uint64_t request_id = 0;
  nlohmann::json result = nlohmann::json::object();  // an object when ok()
  std::optional<ErrorInfo> error;
  bool ok() const { return !error.has_value(); }
};

// Strict parse of one frame's payload. kInvalidArgument, with a message naming the offending field,
// when: the bytes are not one JSON object (UTF-8, no comments, nothing trailing), nesting exceeds
// kMaxJsonDepth, any object repeats a key (duplicate "Op" would let two readers disagree), a
// top-level field is unknown, missing or of the wrong type, Op is not a known operation,
// RequestId is not a non-negative integer, or OnBehalfOf is invalid. Never throws (except
// std::bad_alloc). Messages never quote field values, which may be secrets.
// If `request_id` is non-null it receives the RequestId whenever one could be read, even if the
// parse fails later, so keyd can address its ValidationException; else 0.
Result<Request> ParseRequest(std::string_view payload, uint64_t* request_id = nullptr);
Result<Response> ParseResponse(std::string_view payload);

// Serialized JSON, ready for WriteFrame. kInvalidArgument if the struct would not parse back
// (Params/Result not an object, a string not valid UTF-8, bad OnBehalfOf or error name).
// The returned string may hold secrets (Plaintext); the caller wipes it (crypto::Wipe).
Result<std::string> SerializeRequest(const Request& request);
Result<std::string> SerializeResponse(const Response& response);

// Overwrites (crypto::Wipe) and clears every string value inside `value`, e.g. a Result holding a
// base64 Plaintext once it has been decoded or sent. Keys are left alone. Iterative, so any depth
// is fine. Best effort: copies nlohmann made while parsing or dumping are out of reach.
void WipeJsonStrings(nlohmann::json& value);

// "/" or "/a/b": absolute, no empty, "." or ".." component, no trailing '/', no NUL, at most
// kMaxPathLen bytes, valid UTF-8. Policies match paths textually, so only one spelling per file
// is accepted.
bool IsCanonicalVolumePath(std::string_view path);
// The wire form of a raw (byte-string) path: each byte that is not part of valid UTF-8 becomes
// U+FFFD. Linux names are bytes but JSON strings are UTF-8; such names can then only be matched
// by wildcard policy patterns (docs/protocol.md). Valid UTF-8 is returned unchanged.
std::string ToWirePath(std::string_view raw);

}  // namespace kmsfs::ipc
