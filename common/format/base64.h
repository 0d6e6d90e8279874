// Base64 (RFC 4648 §4, padded, for JSON fields) and base64url (§5, unpadded, for backing names).
#pragma once

#include <string>
#include <string_view>

#include "common/base/bytes.h"
#include "common/base/status.h"

namespace kmsfs::format {

// Standard alphabet with '=' padding; the output length is always a multiple of 4.
std::string Base64Encode(ByteSpan data);

// Strict: only the standard alphabet, length a multiple of 4, '=' only as the final one or two
// characters, no whitespace, and the unused low bits of the last symbol must be zero. Strictness
// gives every byte string exactly one accepted encoding, so a MAC'd or compared text field can't
// be varied without changing its bytes. kInvalidArgument on any violation (format parsers turn
// that into kCorrupt; keyd into InvalidCiphertextException).
Result<Bytes> Base64Decode(std::string_view text);

// URL-safe alphabet ('-' and '_'), no padding: a backing file name may not contain '/', and '='
// would only lengthen names that must fit in 255 bytes.
std::string Base64UrlEncode(ByteSpan data);

// Strict as above: URL-safe alphabet only, no '=', length mod 4 != 1, unused bits zero.
// kInvalidArgument on any violation.
Result<Bytes> Base64UrlDecode(std::string_view text);

// Exact lengths, for bounds checks before encoding or decoding.
constexpr size_t Base64EncodedLen(size_t n) { return (n + 2) / 3 * 4; }
constexpr size_t Base64UrlEncodedLen(size_t n) { return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1); }

}  // namespace kmsfs::format
