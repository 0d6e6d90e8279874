// Wildcard matching for policies: AWS StringLike globs and kmsfs path globs, plus path hygiene.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/base/status.h"

namespace kmsfs::keyd {

// Longest request path Evaluate accepts (PATH_MAX); longer paths are denied outright.
inline constexpr size_t kMaxRequestPathBytes = 4096;

// AWS StringLike: '*' matches any run of characters (including '/' and the empty run), '?' exactly
// one character; everything else matches itself, case-sensitively. A character is a UTF-8 code
// point when the bytes form one, otherwise a single byte, so '?' never splits "é". There is no
// escape and no character class, as in AWS. Worst case O(|pattern| * |subject|), no recursion.
bool GlobMatch(std::string_view pattern, std::string_view subject);

// Puts a request path in the one form path patterns are matched against: absolute, no empty
// components ("//" collapses), no "." components (dropped: "/a/./b" is "/a/b"), no trailing '/'
// (except the root "/"). Fails with kPermissionDenied — the request must be denied, never matched —
// when the path is empty or relative, contains NUL, has a ".." component (we never resolve "..":
// without the directory tree a lexical ".." can name a different file than the kernel would), or
// exceeds kMaxRequestPathBytes. The error message says which, without echoing the path.
Result<std::string> NormalizeRequestPath(std::string_view path);

// A compiled kmsfs:Path pattern. Components are separated by '/'; inside a component '*' matches
// any run of non-'/' characters and '?' one non-'/' character; a component that is exactly "**"
// matches zero or more whole components, so "/a/**" matches "/a", "/a/b" and "/a/b/c".
class PathGlob {
 public:
  // Validates and compiles `pattern`. kInvalidArgument (message without location; the parser adds
  // it) unless the pattern is absolute, has no empty, "." or ".." component, no NUL, no trailing
  // '/' (other than "/" itself), and uses "**" only as a whole component.
  static Result<PathGlob> Compile(std::string_view pattern);

  // True if the normalized path (NormalizeRequestPath's output) matches. Never allocates.
  bool Matches(std::string_view normalized_path) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Component {
    std::string text;
    bool globstar;  // exactly "**"
    bool literal;   // no '*' or '?': plain string equality
  };
  std::string pattern_;
  // Components of pattern_, consecutive "**" collapsed to one.
  std::vector<Component> components_;
};

// Validates a literal path for StringEquals on kmsfs:Path: it must already be in normalized form,
// otherwise it could never equal a request path and is surely a mistake. Message as Compile's.
Status ValidateLiteralPath(std::string_view path);

}  // namespace kmsfs::keyd
