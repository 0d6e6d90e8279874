// EncryptionContext: the key/value pairs a wrap is bound to, and their canonical byte form.
#pragma once

#include <map>
#include <string>

#include "common/base/bytes.h"
#include "common/base/status.h"

namespace kmsfs::format {

// Ordered by key (bytewise), so equal contexts always serialize the same way.
using EncryptionContext = std::map<std::string, std::string>;

inline constexpr size_t kMaxContextPairs = 32;
inline constexpr size_t kMaxContextKeyLen = 256;
inline constexpr size_t kMaxContextValueLen = 2048;

// Canonical form: u16 count, then per pair u16 key_len, key, u16 value_len, value (big-endian).
// kInvalidArgument if a limit above is exceeded or a key is empty.
Result<Bytes> CanonicalContext(const EncryptionContext& ctx);

// Context keys the filesystem uses (docs/format.md): volume id and file id in lower-case hex.
inline constexpr char kContextVolume[] = "kmsfs:volume";
inline constexpr char kContextFile[] = "kmsfs:file";

}  // namespace kmsfs::format
