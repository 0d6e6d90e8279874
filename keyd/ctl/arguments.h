// kmsctl's argument conventions, as the AWS CLI's: fileb:// and file:// values, base64 blobs,
// and the shorthand for maps (k=v,k2=v2) and tags (TagKey=k,TagValue=v).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/status.h"

namespace kmsfs::ctl {

// Largest file kmsctl reads for an argument. Far above any request keyd accepts (a frame is at
// most 256 KiB), small enough that a wrong path (a disk image) fails fast.
inline constexpr size_t kMaxArgumentFile = 1 << 20;

// A text argument: "file://PATH" is the file's contents, anything else is the value itself
// (AWS's --policy file://p.json). kInvalidArgument/kIo naming the option on failure.
Result<std::string> TextArgument(std::string_view option, std::string_view value);

// A binary argument as the base64 the protocol carries: "fileb://PATH" is the file's raw bytes
// (encoded here); anything else must already be base64 (the AWS CLI v2 default).
// The returned string may be secret (a Plaintext); the caller wipes it.
Result<std::string> BlobArgument(std::string_view option, std::string_view value);

// "k=v,k2=v2" or a JSON object of strings ('{"k":"v"}') -> JSON object. Empty input -> {}.
// kInvalidArgument for an entry without '=', an empty key or a duplicate key.
Result<nlohmann::json> MapArgument(std::string_view option, std::string_view value);

// Each "TagKey=k,TagValue=v" (or a JSON object/array in that shape) ->
// [{"TagKey":..,"TagValue":..}].
Result<nlohmann::json> TagsArgument(const std::vector<std::string>& values);

// An absolute form of `path` (relative to the current directory), for paths keyd opens itself.
std::string AbsolutePath(const std::string& path);

// Writes `bytes` to `path` ("-" = stdout), creating the file with mode 0600 (it may be a plaintext
// key) and truncating an existing one. kIo naming the path on failure.
Status WriteOutputFile(const std::string& path, std::string_view bytes);

}  // namespace kmsfs::ctl
