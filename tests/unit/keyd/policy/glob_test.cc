// GlobMatch (AWS StringLike), PathGlob (kmsfs:Path) and request path normalization.
#include "keyd/policy/glob.h"

#include <string>

#include "tests/catch.h"

namespace kmsfs::keyd {
namespace {

using namespace std::string_literals;

TEST_CASE("GlobMatch follows AWS StringLike", "[policy][glob]") {
  struct Row {
    const char* pattern;
    std::string subject;
    bool match;
  };
  const Row rows[] = {
      {"", "", true},
      {"", "a", false},
      {"*", "", true},
      {"*", "/usr/bin/x", true},  // '*' crosses '/' outside kmsfs:Path
      {"/usr/bin/*", "/usr/bin/sub/x", true},
      {"a*b*c", "aXXbYYc", true},
      {"a*b*c", "aXXbYY", false},
      {"a?c", "abc", true},
      {"a?c", "ac", false},
      {"a?c",
       "a\xc3\xa9"
       "c",
       true},  // '?' is one code point, not one byte
      {"a??c",
       "a\xc3\xa9"
       "c",
       false},
      {"a?c",
       "a\xff"
       "c",
       true},                                      // a stray byte is one character
      {"Postgres*", "postgresql.service", false},  // case-sensitive
      {"*.service", "postgresql.service", true},
      {"*a*a*a*a*a*b", std::string(2000, 'a'), false},  // backtracking stays bounded
      {"[ab]", "a", false},                             // no character classes: '[' is literal
      {"[ab]", "[ab]", true},
  };
  for (const Row& r : rows) {
    INFO(r.pattern << " vs " << r.subject);
    CHECK(GlobMatch(r.pattern, r.subject) == r.match);
  }
}

TEST_CASE("NormalizeRequestPath collapses harmless forms and refuses dangerous ones",
          "[policy][glob]") {
  struct Row {
    std::string in;
    const char* out;  // nullptr: refused
    const char* why;
  };
  const Row rows[] = {
      {"/", "/", ""},
      {"/a/b", "/a/b", ""},
      {"//a///b", "/a/b", ""},
      {"/a/./b/.", "/a/b", ""},
      {"/a/b/", "/a/b", ""},
      {"/./", "/", ""},
      {"/a/../b", nullptr, "\"..\""},
      {"/..", nullptr, "\"..\""},
      {"/a/..", nullptr, "\"..\""},
      {"/a/..b/c..", "/a/..b/c..", ""},  // only a whole ".." component is traversal
      {"a/b", nullptr, "not absolute"},
      {"./a", nullptr, "not absolute"},
      {"", nullptr, "empty"},
      {"/a\0/../../etc"s, nullptr, "NUL"},
      {"/" + std::string(4096, 'x'), nullptr, "longer"},
  };
  for (const Row& r : rows) {
    INFO(r.in);
    auto n = NormalizeRequestPath(r.in);
    if (r.out != nullptr) {
      REQUIRE(n.ok());
      CHECK(*n == r.out);
    } else {
      REQUIRE_FALSE(n.ok());
      CHECK(n.error().code() == Code::kPermissionDenied);
      CHECK(n.error().message().find(r.why) != std::string::npos);
    }
  }
}

TEST_CASE("PathGlob: '*' stays in a component, '**' spans components", "[policy][glob]") {
  struct Row {
    const char* pattern;
    const char* path;
    bool match;
  };
  const Row rows[] = {
      {"/", "/", true},
      {"/", "/a", false},
      {"/**", "/", true},
      {"/**", "/a/b/c", true},
      {"/a/*", "/a/b", true},
      {"/a/*", "/a/b/c", false},
      {"/a/*", "/a", false},
      {"/a/**", "/a", true},  // "**" may match zero components
      {"/a/**", "/a/b/c", true},
      {"/a/**", "/ab/c", false},
      {"/a/**/z", "/a/z", true},
      {"/a/**/z", "/a/b/c/z", true},
      {"/a/**/z", "/a/b/c/z/y", false},
      {"/a/**/b/**/c", "/a/x/b/y/b/z/c", true},
      {"/a/**/**/z", "/a/z", true},
      {"/a/*.txt", "/a/.hidden.txt", true},  // no dotfile rule
      {"/a/file?.db", "/a/file1.db", true},
      {"/a/file?.db", "/a/file12.db", false},
      {"/a/B", "/a/b", false},     // case-sensitive
      {"/a/*/c", "/a/b/c", true},  // (Matches takes normalized paths only; Evaluate normalizes)
      {"/**/secret/**", "/x/y/secret/k", true},
      {"/**/secret/**", "/secret", true},
      {"/**/secret/**", "/x/y/secrets/k", false},
  };
  for (const Row& r : rows) {
    INFO(r.pattern << " vs " << r.path);
    auto g = PathGlob::Compile(r.pattern);
    REQUIRE(g.ok());
    CHECK(g->Matches(r.path) == r.match);
  }
}

TEST_CASE("PathGlob::Compile rejects patterns that could never match safely", "[policy][glob]") {
  const std::pair<std::string, const char*> rows[] = {
      {"", "absolute"},
      {"a/**", "absolute"},
      {"**", "absolute"},
      {"/a//b", "empty component"},
      {"/a/", "empty component"},
      {"/a/../b", "\"..\" component"},
      {"/a/./b", "\".\" or"},
      {"/a/b**", "whole path component"},
      {"/***", "whole path component"},
      {"/a\0b"s, "NUL"},
  };
  for (const auto& [pattern, why] : rows) {
    INFO(pattern);
    auto g = PathGlob::Compile(pattern);
    REQUIRE_FALSE(g.ok());
    CHECK(g.error().code() == Code::kInvalidArgument);
    CHECK(g.error().message().find(why) != std::string::npos);
  }
  CHECK(ValidateLiteralPath("/a/b").ok());
  CHECK_FALSE(ValidateLiteralPath("/a/b/").ok());
  CHECK_FALSE(ValidateLiteralPath("/a/./b").ok());
  CHECK_FALSE(ValidateLiteralPath("a").ok());
}

}  // namespace
}  // namespace kmsfs::keyd
