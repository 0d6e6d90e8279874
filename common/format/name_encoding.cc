#include "common/format/name_encoding.h"

#include <algorithm>

#include "common/base/check.h"
#include "common/format/base64.h"
#include "common/format/byte_reader.h"

namespace kmsfs::format {
namespace {

constexpr size_t kDigestLen = 32;
constexpr size_t kLongNameLen = kLongNamePrefix.size() + Base64UrlEncodedLen(kDigestLen);
static_assert(kLongNameLen == 58);
static_assert(kLongNameLen + kLongNameSideSuffix.size() <= kMaxNameLen);
static_assert(Base64UrlEncodedLen(kMaxSivNameLen) == 362);

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.substr(0, prefix.size()) == prefix;
}

// nullptr if `name` is an acceptable directory entry, else why not (without the name).
const char* NameProblem(std::string_view name) {
  if (name.empty()) return "name: empty";
  if (name == "." || name == "..") return "name: '.' and '..' are not file names";
  if (name.size() > kMaxNameLen) return "name: longer than 255 bytes";
  if (name.find('/') != std::string_view::npos) return "name: contains '/'";
  if (name.find('\0') != std::string_view::npos) return "name: contains NUL";
  return nullptr;
}

}  // namespace

Status ValidatePlaintextName(std::string_view name) {
  if (const char* problem = NameProblem(name)) return Error(Code::kInvalidArgument, problem);
  return Status::Ok();
}

Status ValidateDecryptedName(std::string_view name) {
  if (const char* problem = NameProblem(name)) {
    return Error(Code::kCorrupt, std::string("decrypted ") + problem);
  }
  return Status::Ok();
}

bool IsReservedBackingName(std::string_view backing_name) {
  return StartsWith(backing_name, kReservedPrefix);
}

std::string EncodeName(ByteSpan siv_output) {
  KMSFS_CHECK(siv_output.size() >= kMinSivNameLen && siv_output.size() <= kMaxSivNameLen);
  return Base64UrlEncode(siv_output);
}

Result<Bytes> DecodeBackingName(std::string_view encoded) {
  // Length first, so a huge input costs nothing.
  if (encoded.size() < Base64UrlEncodedLen(kMinSivNameLen) ||
      encoded.size() > Base64UrlEncodedLen(kMaxSivNameLen)) {
    return Error(Code::kCorrupt, "backing name: length out of range");
  }
  auto decoded = Base64UrlDecode(encoded);
  if (!decoded.ok()) return Error(Code::kCorrupt, "backing name: " + decoded.error().message());
  if (decoded->size() < kMinSivNameLen || decoded->size() > kMaxSivNameLen) {
    return Error(Code::kCorrupt, "backing name: length out of range");
  }
  return decoded;
}

bool NeedsLongName(std::string_view encoded) { return encoded.size() > kMaxNameLen; }

std::string LongNameFor(std::span<const uint8_t, 32> digest) {
  std::string name(kLongNamePrefix);
  name += Base64UrlEncode(digest);
  return name;
}

std::string LongNameSideFile(std::string_view long_name) {
  std::string name(long_name);
  name += kLongNameSideSuffix;
  return name;
}

Result<std::array<uint8_t, 32>> ParseLongName(std::string_view backing_name) {
  if (backing_name.size() != kLongNameLen || !StartsWith(backing_name, kLongNamePrefix)) {
    return Error(Code::kCorrupt, "long name: malformed");
  }
  auto digest = Base64UrlDecode(backing_name.substr(kLongNamePrefix.size()));
  if (!digest.ok() || digest->size() != kDigestLen) {
    return Error(Code::kCorrupt, "long name: malformed digest");
  }
  std::array<uint8_t, 32> out;
  std::copy(digest->begin(), digest->end(), out.begin());
  return out;
}

bool IsLongNameSideFile(std::string_view backing_name) {
  if (backing_name.size() != kLongNameLen + kLongNameSideSuffix.size()) return false;
  if (backing_name.substr(kLongNameLen) != kLongNameSideSuffix) return false;
  return ParseLongName(backing_name.substr(0, kLongNameLen)).ok();
}

Result<std::string> ParseLongNameSideFile(ByteSpan contents) {
  std::string_view encoded = AsChars(contents);
  if (!NeedsLongName(encoded)) return Error(Code::kCorrupt, "long name side file: too short");
  auto decoded = DecodeBackingName(encoded);
  if (!decoded.ok()) {
    return Error(Code::kCorrupt, "long name side file: " + decoded.error().message());
  }
  return std::string(encoded);
}

Result<Id128> ParseDirId(ByteSpan contents) {
  if (contents.size() != kId128Len) return Error(Code::kCorrupt, "dir id: not 16 bytes");
  if (internal::AllZero(contents)) return Error(Code::kCorrupt, "dir id: all zero");
  Id128 id;
  std::copy(contents.begin(), contents.end(), id.begin());
  return id;
}

}  // namespace kmsfs::format
