#include "keyd/policy/text.h"

#include <algorithm>
#include <cstdint>

#include "common/base/utf8.h"

namespace kmsfs::keyd::policy_internal {

size_t Utf8SequenceLen(std::string_view s, size_t pos) {
  // The policy text helpers step over an invalid byte one at a time (and sanitize it).
  const size_t n = kmsfs::Utf8SequenceLen(s, pos);
  return n == 0 ? 1 : n;
}

void AppendSanitized(std::string* out, std::string_view s, size_t max_bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t i = 0;
  while (i < s.size()) {
    if (i >= max_bytes) {
      out->append("...");
      return;
    }
    const auto c = static_cast<uint8_t>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {  // fast path: a run of plain ASCII
      size_t end = i + 1;
      const size_t limit = std::min(s.size(), max_bytes);
      while (end < limit) {
        const auto d = static_cast<uint8_t>(s[end]);
        if (d < 0x20 || d >= 0x7F || d == '"' || d == '\\') break;
        ++end;
      }
      out->append(s.substr(i, end - i));
      i = end;
      continue;
    }
    const size_t len = Utf8CharLen(s, i);
    if (len > 1) {
      out->append(s.substr(i, len));
    } else if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
    } else if (c >= 0x20 && c < 0x7F) {
      out->push_back(static_cast<char>(c));
    } else {
      out->append("\\x");
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 0xF]);
    }
    i += len;
  }
}

std::string Quote(std::string_view s, size_t max_bytes) {
  std::string out = "\"";
  AppendSanitized(&out, s, max_bytes);
  out.push_back('"');
  return out;
}

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

}  // namespace kmsfs::keyd::policy_internal
