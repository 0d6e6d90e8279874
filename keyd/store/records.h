// The key service's data model (keys, versions, aliases, KDF parameters) and its stored encoding.
//
// Encoding: one JSON object per LMDB value, with AWS KMS field names and a record format version
// "v" (kRecordVersion). JSON rather than CBOR because the records hold no secrets and are small,
// an operator can read them with `mdb_dump -p` when something goes wrong, and unknown fields added
// by a later version are ignored by an older reader. Decoders are strict about what they need
// (missing or mistyped field, unknown enum name, "v" newer than we know → kCorrupt) and never
// throw. Sealed material is NOT in these records: it is raw bytes in its own database (see
// key_store.h), so listing versions never copies it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/status.h"

namespace kmsfs::keyd {

inline constexpr int kRecordVersion = 1;

enum class KeyState : uint8_t { kEnabled, kDisabled, kPendingDeletion, kDestroyed };
enum class VersionState : uint8_t { kEnabled, kRetired, kDestroyed };
enum class RotationType : uint8_t { kInitial, kAutomatic, kOnDemand };

// The stored (and AWS-style) names: "Enabled", "PendingDeletion", "ON_DEMAND", ...
std::string_view KeyStateName(KeyState s);
std::string_view VersionStateName(VersionState s);
std::string_view RotationTypeName(RotationType t);

struct KeyTag {
  std::string tag_key;
  std::string tag_value;
  friend bool operator==(const KeyTag&, const KeyTag&) = default;
};

// One KMS key. Times are unix seconds.
struct KeyRecord {
  std::string key_id;  // lower-case UUID v4, chosen by the store
  std::string description;
  std::vector<KeyTag> tags;
  KeyState key_state = KeyState::kEnabled;
  int64_t creation_date = 0;
  std::optional<int64_t> deletion_date;  // set iff key_state is kPendingDeletion or kDestroyed
  uint32_t primary_version = 0;          // always the newest version
  bool rotation_enabled = false;
  uint32_t rotation_period_in_days = 0;
  std::optional<int64_t> next_rotation_date;  // set iff rotation_enabled
  std::string policy;                         // the key policy document, JSON text, opaque here
  std::string key_usage = "ENCRYPT_DECRYPT";
  std::string key_spec = "SYMMETRIC_DEFAULT";
  std::string origin = "KMSFS";
  friend bool operator==(const KeyRecord&, const KeyRecord&) = default;
};

// One version of a key's material (the material itself is sealed elsewhere).
struct KeyVersion {
  std::string key_id;
  uint32_t version = 0;  // 1, 2, ...
  int64_t creation_date = 0;
  VersionState state = VersionState::kEnabled;
  RotationType rotation_type = RotationType::kInitial;
  std::optional<int64_t> destruction_date;
  friend bool operator==(const KeyVersion&, const KeyVersion&) = default;
};

struct AliasRecord {
  std::string alias_name;  // "alias/..."
  std::string target_key_id;
  int64_t creation_date = 0;
  int64_t last_updated_date = 0;
  friend bool operator==(const AliasRecord&, const AliasRecord&) = default;
};

// scrypt parameters of a passphrase-derived root key, kept in the state's meta database.
struct KdfParams {
  Bytes salt;
  uint64_t n = 0;
  uint32_t r = 0;
  uint32_t p = 0;
  friend bool operator==(const KdfParams&, const KdfParams&) = default;
};

// The meta "format" record: which layout of databases and records the state uses.
struct StateFormat {
  uint32_t version = 0;  // kStateFormatVersion (key_store.h) when written
  int64_t creation_date = 0;
};

// Encoders fail (kInvalidArgument) only on text that is not valid UTF-8.
Result<std::string> EncodeKeyRecord(const KeyRecord& r);
Result<KeyRecord> DecodeKeyRecord(std::string_view json);
Result<std::string> EncodeKeyVersion(const KeyVersion& v);
Result<KeyVersion> DecodeKeyVersion(std::string_view json);
Result<std::string> EncodeAlias(const AliasRecord& a);
Result<AliasRecord> DecodeAlias(std::string_view json);
Result<std::string> EncodeKdfParams(const KdfParams& k);
Result<KdfParams> DecodeKdfParams(std::string_view json);
Result<std::string> EncodeStateFormat(const StateFormat& f);
Result<StateFormat> DecodeStateFormat(std::string_view json);

// A key id: the canonical lower-case text form of a random (version 4) UUID.
std::string KeyIdFromRandom(const std::array<uint8_t, 16>& random16);
bool IsValidKeyId(std::string_view s);
// kInvalidArgument unless `name` is alias/[A-Za-z0-9/_-]{1,250} and not under "alias/aws/".
Status ValidateAliasName(std::string_view name);
// Size and sanity limits (AWS's): description ≤ 8192 bytes, ≤ 50 tags with unique keys of 1..128
// bytes and values ≤ 256 bytes, policy ≤ 32 KiB; the rotation and deletion fields consistent with
// the state. kInvalidArgument naming the field otherwise.
Status ValidateKeyRecord(const KeyRecord& r);

// The versions/material database key of (key_id, version): "KEYID/0000000a" — fixed-width hex, so
// a cursor over the prefix "KEYID/" yields a key's versions in ascending order.
std::string VersionKey(std::string_view key_id, uint32_t version);
// Inverse of VersionKey; false if `key` is not of that form.
bool ParseVersionKey(std::string_view key, std::string* key_id, uint32_t* version);

}  // namespace kmsfs::keyd
