// Small text helpers shared by the policy parser and evaluator: UTF-8 stepping and safe quoting.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kmsfs::keyd::policy_internal {

// Length of the character starting at s[pos]: the length of a well-formed UTF-8 sequence there,
// otherwise 1 (a stray byte counts as one character). REQUIRES: pos < s.size().
size_t Utf8SequenceLen(std::string_view s, size_t pos);  // the non-ASCII case
inline size_t Utf8CharLen(std::string_view s, size_t pos) {
  return static_cast<unsigned char>(s[pos]) < 0x80 ? 1 : Utf8SequenceLen(s, pos);
}

// Appends `s` so that it is safe in a one-line message: well-formed UTF-8 and printable ASCII pass,
// '"' and '\' are backslash-escaped, anything else (controls, NUL, stray bytes) becomes \xNN.
// At most `max_bytes` of input are shown; longer input ends in "...".
void AppendSanitized(std::string* out, std::string_view s, size_t max_bytes = 256);

// "\"" + sanitized s + "\"".
std::string Quote(std::string_view s, size_t max_bytes = 256);

// ASCII-only case folding; policies never fold non-ASCII (no locale in a security decision).
char AsciiLower(char c);
bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b);

}  // namespace kmsfs::keyd::policy_internal
