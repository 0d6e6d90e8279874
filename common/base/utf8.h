// UTF-8 validation for text that crosses a trust boundary (wire paths, policy documents).
#pragma once

#include <cstddef>
#include <string_view>

namespace kmsfs {

// Length of the valid UTF-8 sequence starting at s[i] (1..4), or 0 if the bytes there are not one
// (overlong forms, surrogates, code points above U+10FFFF and truncated sequences are invalid).
// REQUIRES: i < s.size().
size_t Utf8SequenceLen(std::string_view s, size_t i);

// Whether all of `s` is well-formed UTF-8.
bool IsValidUtf8(std::string_view s);

}  // namespace kmsfs
