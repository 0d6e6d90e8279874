#include "keyd/ctl/arguments.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "common/base/unique_fd.h"
#include "common/crypto/secret.h"
#include "common/format/base64.h"

namespace kmsfs::ctl {
namespace {

using nlohmann::json;

constexpr std::string_view kFile = "file://";
constexpr std::string_view kFileB = "fileb://";

Error Invalid(std::string_view option, const std::string& what) {
  return Error(Code::kInvalidArgument, std::string(option) + ": " + what);
}

Result<std::string> ReadWholeFile(std::string_view option, const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd)
    return Error(Code::kIo,
                 std::string(option) + ": cannot open " + path + ": " + std::strerror(errno),
                 errno);
  std::string out;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      crypto::Wipe(out);
      return Error(Code::kIo,
                   std::string(option) + ": cannot read " + path + ": " + std::strerror(err), err);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > kMaxArgumentFile) {
      crypto::Wipe(out);
      return Invalid(option,
                     path + " is larger than " + std::to_string(kMaxArgumentFile) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  crypto::Wipe(std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf), sizeof buf));
  return out;
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? s.npos : pos - start));
    if (pos == std::string_view::npos) return out;
    start = pos + 1;
  }
}

Result<json> TagFromShorthand(std::string_view text) {
  json tag = json::object();
  for (std::string_view part : Split(text, ',')) {
    const size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      return Invalid("--tags",
                     "expected TagKey=KEY,TagValue=VALUE, got '" + std::string(text) + "'");
    }
    const std::string field(part.substr(0, eq));
    if (field != "TagKey" && field != "TagValue") {
      return Invalid("--tags", "unknown field '" + field + "' (TagKey or TagValue)");
    }
    if (tag.contains(field)) return Invalid("--tags", field + " given twice in one tag");
    tag[field] = std::string(part.substr(eq + 1));
  }
  if (!tag.contains("TagKey")) return Invalid("--tags", "a tag needs TagKey=...");
  if (!tag.contains("TagValue")) tag["TagValue"] = "";
  return tag;
}

}  // namespace

Result<std::string> TextArgument(std::string_view option, std::string_view value) {
  if (StartsWith(value, kFile))
    return ReadWholeFile(option, std::string(value.substr(kFile.size())));
  if (StartsWith(value, kFileB)) {
    return ReadWholeFile(option, std::string(value.substr(kFileB.size())));
  }
  return std::string(value);
}

Result<std::string> BlobArgument(std::string_view option, std::string_view value) {
  if (StartsWith(value, kFileB)) {
    KMSFS_ASSIGN_OR_RETURN(std::string raw,
                           ReadWholeFile(option, std::string(value.substr(kFileB.size()))));
    std::string encoded = format::Base64Encode(AsBytes(raw));
    crypto::Wipe(raw);
    return encoded;
  }
  if (StartsWith(value, kFile)) {
    return Invalid(option, "binary input is read with fileb://PATH, not file://");
  }
  auto decoded = format::Base64Decode(value);
  if (!decoded.ok()) {
    return Invalid(option, "expected fileb://PATH or base64 (the AWS CLI v2 default)");
  }
  crypto::Wipe(std::span<uint8_t>(*decoded));
  return std::string(value);
}

Result<json> MapArgument(std::string_view option, std::string_view value) {
  json out = json::object();
  if (value.empty()) return out;
  if (value.front() == '{') {
    json parsed = json::parse(value.begin(), value.end(), nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_object()) return Invalid(option, "not a JSON object");
    for (auto& [k, v] : parsed.items()) {
      if (!v.is_string()) return Invalid(option, "the value of '" + k + "' is not a string");
    }
    return parsed;
  }
  for (std::string_view entry : Split(value, ',')) {
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return Invalid(option, "expected KEY=VALUE[,KEY=VALUE...], got '" + std::string(entry) + "'");
    }
    const std::string key(entry.substr(0, eq));
    if (out.contains(key)) return Invalid(option, "key '" + key + "' given twice");
    out[key] = std::string(entry.substr(eq + 1));
  }
  return out;
}

Result<json> TagsArgument(const std::vector<std::string>& values) {
  json tags = json::array();
  for (const std::string& v : values) {
    if (!v.empty() && (v.front() == '{' || v.front() == '[')) {
      json parsed = json::parse(v, nullptr, /*allow_exceptions=*/false);
      if (parsed.is_object()) parsed = json::array({parsed});
      if (!parsed.is_array()) return Invalid("--tags", "not a JSON object or array");
      for (auto& t : parsed) tags.push_back(std::move(t));
      continue;
    }
    KMSFS_ASSIGN_OR_RETURN(json tag, TagFromShorthand(v));
    tags.push_back(std::move(tag));
  }
  return tags;
}

std::string AbsolutePath(const std::string& path) {
  if (path.empty() || path.front() == '/') return path;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

Status WriteOutputFile(const std::string& path, std::string_view bytes) {
  UniqueFd owned;
  int fd = STDOUT_FILENO;
  if (path != "-") {
    owned =
        UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600));
    if (!owned)
      return Error(Code::kIo, "cannot create " + path + ": " + std::strerror(errno), errno);
    fd = owned.get();
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error(Code::kIo, "cannot write " + path + ": " + std::strerror(errno), errno);
    }
    done += static_cast<size_t>(n);
  }
  if (owned && ::close(owned.Release()) != 0) {
    return Error(Code::kIo, "cannot write " + path + ": " + std::strerror(errno), errno);
  }
  return Status::Ok();
}

}  // namespace kmsfs::ctl
