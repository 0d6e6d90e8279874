// VolumeConfig: the volume's kmsfs.conf (JSON): format version, ids, features, wrapped name key.
#pragma once

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/format/ids.h"

namespace kmsfs::format {

// Feature names. Format 1 requires the first two (they name the only content and name layouts
// of Format 1); "long-names" is optional: without it, names whose encoding exceeds 255 bytes
// are refused (ENAMETOOLONG) instead of being stored as kmsfs.longname.* files.
inline constexpr char kFeatureInterleavedMetaV1[] = "interleaved-meta-v1";
inline constexpr char kFeatureSivNames[] = "siv-names";
inline constexpr char kFeatureLongNames[] = "long-names";
// "header-links" (optional, written by every `kmsfs init` since it exists): each file header
// carries link tags binding it to its directory entries, and an open through an entry whose tag
// is missing is EIO (docs/format.md §6.2). Volumes without it do not check or write tags.
inline constexpr char kFeatureHeaderLinks[] = "header-links";

// Larger input is rejected before JSON parsing; a real config is well under 1 KiB.
inline constexpr size_t kMaxVolumeConfigSize = 64 * 1024;

// Fields in JSON order:
//   {"Format":1,"VolumeId":"<32 hex>","KeyId":"<key id or alias>","BlockSize":4096,
//    "Features":[...],"NameKeyBlob":"<base64 WrappedBlob>","CreatedAt":"<RFC 3339>",
//    "Mac":"<64 hex>"}
// Mac = HMAC-SHA256 over VolumeConfigMacInput() under HKDF(name key, "kmsfs/v1/config-mac"),
// computed and checked by the filesystem; this module only provides the bytes.
struct VolumeConfig {
  static constexpr uint32_t kFormat = 1;

  uint32_t format = kFormat;
  Id128 volume_id{};
  std::string key_id;              // key id or "alias/..." (key_id.h)
  uint32_t block_size = 4096;      // must be 4096 in Format 1
  std::set<std::string> features;  // bytewise order = canonical order
  Bytes name_key_blob;             // serialized WrappedBlob of the 256-bit name key
  std::string created_at;          // RFC 3339, as written, e.g. "2026-11-28T18:12:36Z"
  std::array<uint8_t, 32> mac{};

  bool HasFeature(std::string_view f) const { return features.count(std::string(f)) != 0; }
  friend bool operator==(const VolumeConfig&, const VolumeConfig&) = default;
};

// Strict: valid UTF-8 JSON object of at most kMaxVolumeConfigSize bytes, exactly the eight
// fields above (unknown or duplicate keys rejected), each of the right JSON type and syntax
// (lower-case hex, strict base64, known features with the mandatory ones present, a NameKeyBlob
// that parses and wraps 32 bytes). Never throws.
//   kFailedPrecondition: Format > 1 ("written by a newer kmsfs"), checked before anything else
//                        so that a newer config fails with that message, not an "unknown field".
//   kCorrupt:            anything else.
Result<VolumeConfig> ParseVolumeConfig(std::string_view json);

// Pretty-printed JSON in the field order above, ending in a newline. kInvalidArgument if the
// config would not parse back (ValidateVolumeConfig).
Result<std::string> SerializeVolumeConfig(const VolumeConfig& config);

// The canonical bytes the MAC covers: every field except Mac (layout in docs/format.md).
// kInvalidArgument if the config is invalid, since lengths must fit their u16 fields.
Result<Bytes> VolumeConfigMacInput(const VolumeConfig& config);

// The rules ParseVolumeConfig enforces, for a config built in memory. kInvalidArgument.
Status ValidateVolumeConfig(const VolumeConfig& config);

// RFC 3339 date-time, strict subset: "YYYY-MM-DDTHH:MM:SS[.1-9 digits](Z|+HH:MM|-HH:MM)",
// upper-case 'T' and 'Z', real calendar dates, seconds 00..60.
bool IsValidRfc3339(std::string_view s);
// "YYYY-MM-DDTHH:MM:SSZ" for a Unix time; kInvalidArgument outside years 1970..9999.
Result<std::string> Rfc3339Utc(int64_t unix_seconds);

}  // namespace kmsfs::format
