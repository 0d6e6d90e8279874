#include "fs/fuse/mount_options.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace kmsfs::fs {
namespace {

std::vector<std::string> SplitCommas(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      // Keep the escape: libfuse's own parser unescapes the options we pass on.
      cur.push_back('\\');
      cur.push_back(s[++i]);
    } else if (s[i] == ',') {
      out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(s[i]);
    }
  }
  out.push_back(std::move(cur));
  return out;
}

std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) ++i;
    out.push_back(s[i]);
  }
  return out;
}

bool IsFstabOnly(std::string_view o) {
  static constexpr std::string_view kDropped[] = {"",
                                                  "defaults",
                                                  "auto",
                                                  "noauto",
                                                  "user",
                                                  "users",
                                                  "nouser",
                                                  "owner",
                                                  "group",
                                                  "nofail",
                                                  "_netdev",
                                                  "rw",
                                                  "default_permissions"};
  for (auto d : kDropped) {
    if (o == d) return true;
  }
  return o.starts_with("x-") || o.starts_with("comment=");
}

// A number of seconds in (0, 3600], fractions allowed, as milliseconds (at least 1).
Result<std::chrono::milliseconds> ParseSeconds(std::string_view name, const std::string& v) {
  char* end = nullptr;
  const double seconds = std::strtod(v.c_str(), &end);
  if (v.empty() || end != v.c_str() + v.size() || !(seconds > 0) || seconds > 3600 ||
      !std::isfinite(seconds)) {
    return Error(Code::kInvalidArgument,
                 std::string(name) + " must be a number of seconds in (0, 3600]");
  }
  return std::max(std::chrono::milliseconds(1),
                  std::chrono::milliseconds(std::llround(seconds * 1000)));
}

}  // namespace

Result<SplitOptions> SplitMountOptions(const std::vector<std::string>& o_values) {
  SplitOptions out;
  for (const auto& value : o_values) {
    for (auto& o : SplitCommas(value)) {
      if (o.starts_with("socket=")) {
        out.socket = Unescape(std::string_view(o).substr(7));
        if (out.socket->empty()) return Error(Code::kInvalidArgument, "socket= needs a path");
      } else if (o.starts_with("key_timeout=")) {
        KMSFS_ASSIGN_OR_RETURN(out.key_timeout, ParseSeconds("key_timeout=", o.substr(12)));
      } else if (o.starts_with("key_revalidate=")) {
        KMSFS_ASSIGN_OR_RETURN(out.key_revalidate, ParseSeconds("key_revalidate=", o.substr(15)));
      } else if (o.starts_with("keyd_uid=")) {
        const std::string v = o.substr(9);
        unsigned long uid = 0;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), uid);
        if (v.empty() || ec != std::errc() || p != v.data() + v.size() || uid >= 0xffffffffu) {
          return Error(Code::kInvalidArgument, "keyd_uid= must be a numeric uid");
        }
        out.keyd_uid = static_cast<uid_t>(uid);
      } else if (o == "debug") {
        out.debug = true;
      } else if (!IsFstabOnly(o)) {
        out.fuse.push_back(std::move(o));
      }
    }
  }
  return out;
}

}  // namespace kmsfs::fs
