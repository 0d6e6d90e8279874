#include "keyd/policy/text.h"

#include <algorithm>
#include <cstdint>

namespace kmsfs::keyd::policy_internal {

size_t Utf8SequenceLen(std::string_view s, size_t pos) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t c = b(pos);
  if (c < 0x80) return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte (rejects overlongs/surrogates)
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  if (pos + len > s.size()) return 1;
  if (b(pos + 1) < lo || b(pos + 1) > hi) return 1;
  for (size_t i = 2; i < len; ++i) {
    if ((b(pos + i) & 0xC0) != 0x80) return 1;
  }
  return len;
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
