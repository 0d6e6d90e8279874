// EncryptionContext: the key/value pairs a wrap is bound to, and their canonical byte form.
#pragma once

#include <map>
#include <span>
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

// The inverse, strict: exact length, limits as above, keys non-empty and strictly ascending
// (so only canonical bytes are accepted). kCorrupt on any violation. For stored contexts and
// for tests; the AEAD never needs it (it recomputes CanonicalContext from the caller's map).
Result<EncryptionContext> ParseCanonicalContext(ByteSpan bytes);

// Context keys the filesystem uses (docs/format.md): volume id and file id in lower-case hex.
inline constexpr char kContextVolume[] = "kmsfs:volume";
inline constexpr char kContextFile[] = "kmsfs:file";
// Names the job of a per-volume key that has no file, e.g. {kmsfs:purpose: names}.
inline constexpr char kContextPurpose[] = "kmsfs:purpose";
inline constexpr char kPurposeNames[] = "names";

// The context a file's DEK (FileHeader) is wrapped under: {kmsfs:file, kmsfs:volume}.
EncryptionContext FileDekContext(std::span<const uint8_t, 16> volume_id,
                                 std::span<const uint8_t, 16> file_id);
// The context the volume's name key (kmsfs.conf NameKeyBlob) is wrapped under:
// {kmsfs:purpose: names, kmsfs:volume}.
EncryptionContext NameKeyContext(std::span<const uint8_t, 16> volume_id);

}  // namespace kmsfs::format
