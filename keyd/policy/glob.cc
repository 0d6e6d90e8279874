#include "keyd/policy/glob.h"

#include "keyd/policy/text.h"

namespace kmsfs::keyd {

using policy_internal::Utf8CharLen;

bool GlobMatch(std::string_view pattern, std::string_view subject) {
  // The classic linear-space wildcard match: on a mismatch, let the most recent '*' absorb one
  // more character and retry. Correct for '*'/'?' globs and O(|pattern| * |subject|) at worst;
  // characters are stepped as UTF-8 code points so '?' and the backtrack never split one.
  constexpr size_t kNone = std::string_view::npos;
  size_t p = 0, s = 0;
  size_t star_p = kNone, star_s = 0;
  while (s < subject.size()) {
    if (p < pattern.size()) {
      if (pattern[p] == '*') {
        star_p = p++;
        star_s = s;
        continue;
      }
      if (pattern[p] == '?') {
        ++p;
        s += Utf8CharLen(subject, s);
        continue;
      }
      const size_t pl = Utf8CharLen(pattern, p);
      const size_t sl = Utf8CharLen(subject, s);
      if (pl == sl &&
          (pl == 1 ? pattern[p] == subject[s] : pattern.compare(p, pl, subject, s, sl) == 0)) {
        p += pl;
        s += sl;
        continue;
      }
    }
    if (star_p == kNone) return false;
    p = star_p + 1;
    star_s += Utf8CharLen(subject, star_s);
    s = star_s;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

Result<std::string> NormalizeRequestPath(std::string_view path) {
  const auto deny = [](const char* why) { return Error(Code::kPermissionDenied, why); };
  if (path.empty()) return deny("path is empty");
  if (path.find('\0') != std::string_view::npos) return deny("path contains a NUL byte");
  if (path.size() > kMaxRequestPathBytes) return deny("path is longer than 4096 bytes");
  if (path[0] != '/') return deny("path is not absolute");
  std::string out;
  out.reserve(path.size());
  size_t pos = 0;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view comp = path.substr(pos, end - pos);
    pos = end + 1;
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") return deny("path has a \"..\" component");
    out.push_back('/');
    out.append(comp);
  }
  if (out.empty()) out.push_back('/');  // root; (not `= "/"`: GCC 12 -Wrestrict false positive)
  return out;
}

Result<PathGlob> PathGlob::Compile(std::string_view pattern) {
  const auto bad = [](const char* why) { return Error(Code::kInvalidArgument, why); };
  if (pattern.find('\0') != std::string_view::npos) return bad("path pattern contains a NUL byte");
  if (pattern.empty() || pattern[0] != '/') {
    return bad("path pattern must be absolute (start with \"/\")");
  }
  PathGlob glob;
  glob.pattern_ = std::string(pattern);
  if (pattern == "/") return glob;
  size_t pos = 1;
  while (true) {
    size_t end = pattern.find('/', pos);
    const bool last = end == std::string_view::npos;
    if (last) end = pattern.size();
    const std::string_view comp = pattern.substr(pos, end - pos);
    if (comp.empty()) {
      return bad("path pattern has an empty component (\"//\" or a trailing \"/\")");
    }
    if (comp == "." || comp == "..") {
      return bad("path pattern has a \".\" or \"..\" component, which no request path has");
    }
    if (comp != "**" && comp.find("**") != std::string_view::npos) {
      return bad("\"**\" must be a whole path component, as in \"/a/**/b\"");
    }
    // "/**/**" means the same as "/**"; collapsing keeps the backtracking match linear in spirit.
    const bool globstar = comp == "**";
    if (!(globstar && !glob.components_.empty() && glob.components_.back().globstar)) {
      const bool literal = comp.find_first_of("*?") == std::string_view::npos;
      glob.components_.push_back(Component{std::string(comp), globstar, literal});
    }
    if (last) break;
    pos = end + 1;
  }
  return glob;
}

bool PathGlob::Matches(std::string_view path) const {
  // Same backtracking scheme as GlobMatch, one level up: "**" is the star over components and each
  // other pattern component must GlobMatch exactly one path component. Offsets index `path`.
  constexpr size_t kNone = std::string_view::npos;
  const size_t m = components_.size();
  const auto next_component = [&](size_t off, std::string_view* comp) {
    size_t end = path.find('/', off);
    if (end == std::string_view::npos) end = path.size();
    *comp = path.substr(off, end - off);
    return end < path.size() ? end + 1 : path.size();
  };
  size_t i = 0;
  size_t j = path.size() <= 1 ? path.size() : 1;  // "/" has no components
  size_t star_i = kNone, star_j = 0;
  while (j < path.size()) {
    if (i < m && components_[i].globstar) {
      star_i = i++;
      star_j = j;
      continue;
    }
    std::string_view comp;
    const size_t next = next_component(j, &comp);
    if (i < m && (components_[i].literal ? components_[i].text == comp
                                         : GlobMatch(components_[i].text, comp))) {
      ++i;
      j = next;
      continue;
    }
    if (star_i == kNone) return false;
    i = star_i + 1;
    star_j = next_component(star_j, &comp);
    j = star_j;
  }
  while (i < m && components_[i].globstar) ++i;
  return i == m;
}

Status ValidateLiteralPath(std::string_view path) {
  auto normalized = NormalizeRequestPath(path);
  if (!normalized.ok() || *normalized != path) {
    return Error(
        Code::kInvalidArgument,
        "path must be absolute and normalized (no \"//\", \".\", \"..\" or trailing \"/\")");
  }
  return Status::Ok();
}

}  // namespace kmsfs::keyd
