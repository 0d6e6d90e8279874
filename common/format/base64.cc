#include "common/format/base64.h"

#include <array>

namespace kmsfs::format {
namespace {

constexpr char kStd[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kUrl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Reverse table: symbol value 0..63, or -1 for any byte outside the alphabet (including '=').
using DecodeTable = std::array<int8_t, 256>;
constexpr DecodeTable MakeTable(const char* alphabet) {
  DecodeTable t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(alphabet[i])] = static_cast<int8_t>(i);
  return t;
}
constexpr DecodeTable kStdTable = MakeTable(kStd);
constexpr DecodeTable kUrlTable = MakeTable(kUrl);

std::string Encode(ByteSpan data, const char* alphabet, bool pad) {
  std::string out;
  out.reserve(Base64EncodedLen(data.size()));
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8) | data[i + 2];
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    out.push_back(alphabet[v & 63]);
  }
  const size_t rest = data.size() - i;
  if (rest == 1) {
    uint32_t v = uint32_t(data[i]) << 16;
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    if (pad) out.append("==");
  } else if (rest == 2) {
    uint32_t v = (uint32_t(data[i]) << 16) | (uint32_t(data[i + 1]) << 8);
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    if (pad) out.push_back('=');
  }
  return out;
}

// Decodes `text`, which has already had its padding stripped; len % 4 must not be 1.
Result<Bytes> DecodeUnpadded(std::string_view text, const DecodeTable& table) {
  if (text.size() % 4 == 1) return Error(Code::kInvalidArgument, "base64: impossible length");
  Bytes out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int8_t v = table[static_cast<uint8_t>(c)];
    if (v < 0) return Error(Code::kInvalidArgument, "base64: character outside the alphabet");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits));
      acc &= (1u << bits) - 1;
    }
  }
  // 2 or 4 leftover bits: they carry no data and must be zero (RFC 4648 §3.5), otherwise several
  // texts would decode to the same bytes.
  if (acc != 0) return Error(Code::kInvalidArgument, "base64: nonzero trailing bits");
  return out;
}

}  // namespace

std::string Base64Encode(ByteSpan data) { return Encode(data, kStd, /*pad=*/true); }
std::string Base64UrlEncode(ByteSpan data) { return Encode(data, kUrl, /*pad=*/false); }

Result<Bytes> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return Error(Code::kInvalidArgument, "base64: length not a multiple of 4");
  }
  size_t pad = 0;
  if (!text.empty() && text.back() == '=') {
    pad = 1;
    if (text[text.size() - 2] == '=') pad = 2;
  }
  // '=' anywhere else is outside the table and rejected by DecodeUnpadded.
  return DecodeUnpadded(text.substr(0, text.size() - pad), kStdTable);
}

Result<Bytes> Base64UrlDecode(std::string_view text) { return DecodeUnpadded(text, kUrlTable); }

}  // namespace kmsfs::format
