#include "keyd/store/records.h"

#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

constexpr size_t kMaxDescription = 8192;
constexpr size_t kMaxTags = 50;
constexpr size_t kMaxTagKey = 128;
constexpr size_t kMaxTagValue = 256;
constexpr size_t kMaxPolicy = size_t{32} * 1024;
constexpr uint32_t kMaxRotationPeriodDays = 2560;

// Serializes `j`, refusing (instead of throwing on, or silently replacing) invalid UTF-8.
Result<std::string> Dump(const json& j, std::string_view what) {
  try {
    return j.dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception&) {
    return Error(Code::kInvalidArgument, std::string(what) + ": text is not valid UTF-8");
  }
}

// Field readers: no exceptions, explicit range checks (nlohmann's get<uint32_t>() on -1 or 2^40
// would silently wrap).
class Fields {
 public:
  Fields(const json& j, std::string_view what) : j_(j), what_(what) {}

  Error Bad(std::string_view field) const {
    return Error(Code::kCorrupt,
                 std::string(what_) + ": field " + std::string(field) + " missing or mistyped");
  }
  const json* Find(const char* name) const {
    auto it = j_.find(name);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  bool Str(const char* name, std::string* out) const {
    const json* v = Find(name);
    if (v == nullptr || !v->is_string()) return false;
    *out = v->get_ref<const std::string&>();
    return true;
  }
  bool I64(const json* v, int64_t* out) const {
    if (v == nullptr) return false;
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
      *out = static_cast<int64_t>(u);
      return true;
    }
    if (!v->is_number_integer()) return false;
    *out = v->get<int64_t>();
    return true;
  }
  bool I64(const char* name, int64_t* out) const { return I64(Find(name), out); }
  bool OptI64(const char* name, std::optional<int64_t>* out) const {
    const json* v = Find(name);
    if (v == nullptr) {
      out->reset();
      return true;
    }
    int64_t x = 0;
    if (!I64(v, &x)) return false;
    *out = x;
    return true;
  }
  bool U64(const char* name, uint64_t max, uint64_t* out) const {
    const json* v = Find(name);
    if (v == nullptr || !v->is_number_unsigned()) return false;
    *out = v->get<uint64_t>();
    return *out <= max;
  }
  bool U32(const char* name, uint32_t* out) const {
    uint64_t x = 0;
    if (!U64(name, std::numeric_limits<uint32_t>::max(), &x)) return false;
    *out = static_cast<uint32_t>(x);
    return true;
  }
  bool Bool(const char* name, bool* out) const {
    const json* v = Find(name);
    if (v == nullptr || !v->is_boolean()) return false;
    *out = v->get<bool>();
    return true;
  }

 private:
  const json& j_;
  std::string_view what_;
};

template <class T, class F>
Result<T> NoThrow(F&& f) {
  try {
    return f();
  } catch (const json::exception& e) {
    return Error(Code::kCorrupt, std::string("malformed record: ") + e.what());
  }
}

// Parses the object and checks its record version. kCorrupt on malformed JSON; kFailedPrecondition
// on a record written by a newer kmsfs (a downgrade, not damage).
Result<json> ParseRecord(std::string_view text, std::string_view what) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(Code::kCorrupt, std::string(what) + ": not a JSON object");
  }
  auto it = j.find("v");
  if (it == j.end() || !it->is_number_unsigned() || it->get<uint64_t>() < 1) {
    return Error(Code::kCorrupt, std::string(what) + ": missing record version");
  }
  if (it->get<uint64_t>() > static_cast<uint64_t>(kRecordVersion)) {
    return Error(Code::kFailedPrecondition,
                 std::string(what) + ": record format v" + std::to_string(it->get<uint64_t>()) +
                     " was written by a newer kmsfs (this one reads up to v" +
                     std::to_string(kRecordVersion) + ")");
  }
  return j;
}

template <class Enum, size_t N>
bool EnumFromName(std::string_view name, const std::string_view (&names)[N], Enum* out) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == name) {
      *out = static_cast<Enum>(i);
      return true;
    }
  }
  return false;
}

constexpr std::string_view kKeyStateNames[] = {"Enabled", "Disabled", "PendingDeletion",
                                               "Destroyed"};
constexpr std::string_view kVersionStateNames[] = {"Enabled", "Retired", "Destroyed"};
constexpr std::string_view kRotationTypeNames[] = {"INITIAL", "AUTOMATIC", "ON_DEMAND"};

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

Error Invalid(std::string msg) { return Error(Code::kInvalidArgument, std::move(msg)); }

}  // namespace

std::string_view KeyStateName(KeyState s) { return kKeyStateNames[static_cast<size_t>(s)]; }
std::string_view VersionStateName(VersionState s) {
  return kVersionStateNames[static_cast<size_t>(s)];
}
std::string_view RotationTypeName(RotationType t) {
  return kRotationTypeNames[static_cast<size_t>(t)];
}

// ---- KeyRecord ----------------------------------------------------------------------------------

Result<std::string> EncodeKeyRecord(const KeyRecord& r) {
  json tags = json::array();
  for (const KeyTag& t : r.tags) tags.push_back({{"TagKey", t.tag_key}, {"TagValue", t.tag_value}});
  json j = {{"v", kRecordVersion},
            {"KeyId", r.key_id},
            {"Description", r.description},
            {"Tags", std::move(tags)},
            {"KeyState", KeyStateName(r.key_state)},
            {"CreationDate", r.creation_date},
            {"PrimaryVersion", r.primary_version},
            {"RotationEnabled", r.rotation_enabled},
            {"RotationPeriodInDays", r.rotation_period_in_days},
            {"Policy", r.policy},
            {"KeyUsage", r.key_usage},
            {"KeySpec", r.key_spec},
            {"Origin", r.origin}};
  if (r.deletion_date) j["DeletionDate"] = *r.deletion_date;
  if (r.next_rotation_date) j["NextRotationDate"] = *r.next_rotation_date;
  return Dump(j, "key record");
}

static Result<KeyRecord> DecodeKeyRecordUnguarded(std::string_view text) {
  KMSFS_ASSIGN_OR_RETURN(json j, ParseRecord(text, "key record"));
  Fields f(j, "key record");
  KeyRecord r;
  std::string state;
  if (!f.Str("KeyId", &r.key_id)) return f.Bad("KeyId");
  if (!f.Str("Description", &r.description)) return f.Bad("Description");
  if (!f.Str("KeyState", &state) || !EnumFromName(state, kKeyStateNames, &r.key_state)) {
    return f.Bad("KeyState");
  }
  if (!f.I64("CreationDate", &r.creation_date)) return f.Bad("CreationDate");
  if (!f.OptI64("DeletionDate", &r.deletion_date)) return f.Bad("DeletionDate");
  if (!f.U32("PrimaryVersion", &r.primary_version)) return f.Bad("PrimaryVersion");
  if (!f.Bool("RotationEnabled", &r.rotation_enabled)) return f.Bad("RotationEnabled");
  if (!f.U32("RotationPeriodInDays", &r.rotation_period_in_days)) {
    return f.Bad("RotationPeriodInDays");
  }
  if (!f.OptI64("NextRotationDate", &r.next_rotation_date)) return f.Bad("NextRotationDate");
  if (!f.Str("Policy", &r.policy)) return f.Bad("Policy");
  if (!f.Str("KeyUsage", &r.key_usage)) return f.Bad("KeyUsage");
  if (!f.Str("KeySpec", &r.key_spec)) return f.Bad("KeySpec");
  if (!f.Str("Origin", &r.origin)) return f.Bad("Origin");
  const json* tags = f.Find("Tags");
  if (tags == nullptr || !tags->is_array()) return f.Bad("Tags");
  for (const json& t : *tags) {
    if (!t.is_object()) return f.Bad("Tags");
    Fields tf(t, "key record tag");
    KeyTag tag;
    if (!tf.Str("TagKey", &tag.tag_key) || !tf.Str("TagValue", &tag.tag_value)) {
      return f.Bad("Tags");
    }
    r.tags.push_back(std::move(tag));
  }
  return r;
}

// ---- KeyVersion ---------------------------------------------------------------------------------

Result<std::string> EncodeKeyVersion(const KeyVersion& v) {
  json j = {{"v", kRecordVersion},
            {"KeyId", v.key_id},
            {"Version", v.version},
            {"CreationDate", v.creation_date},
            {"State", VersionStateName(v.state)},
            {"RotationType", RotationTypeName(v.rotation_type)}};
  if (v.destruction_date) j["DestructionDate"] = *v.destruction_date;
  return Dump(j, "key version");
}

static Result<KeyVersion> DecodeKeyVersionUnguarded(std::string_view text) {
  KMSFS_ASSIGN_OR_RETURN(json j, ParseRecord(text, "key version"));
  Fields f(j, "key version");
  KeyVersion v;
  std::string state;
  std::string type;
  if (!f.Str("KeyId", &v.key_id)) return f.Bad("KeyId");
  if (!f.U32("Version", &v.version)) return f.Bad("Version");
  if (!f.I64("CreationDate", &v.creation_date)) return f.Bad("CreationDate");
  if (!f.Str("State", &state) || !EnumFromName(state, kVersionStateNames, &v.state)) {
    return f.Bad("State");
  }
  if (!f.Str("RotationType", &type) || !EnumFromName(type, kRotationTypeNames, &v.rotation_type)) {
    return f.Bad("RotationType");
  }
  if (!f.OptI64("DestructionDate", &v.destruction_date)) return f.Bad("DestructionDate");
  return v;
}

// ---- AliasRecord --------------------------------------------------------------------------------

Result<std::string> EncodeAlias(const AliasRecord& a) {
  json j = {{"v", kRecordVersion},
            {"AliasName", a.alias_name},
            {"TargetKeyId", a.target_key_id},
            {"CreationDate", a.creation_date},
            {"LastUpdatedDate", a.last_updated_date}};
  return Dump(j, "alias");
}

static Result<AliasRecord> DecodeAliasUnguarded(std::string_view text) {
  KMSFS_ASSIGN_OR_RETURN(json j, ParseRecord(text, "alias"));
  Fields f(j, "alias");
  AliasRecord a;
  if (!f.Str("AliasName", &a.alias_name)) return f.Bad("AliasName");
  if (!f.Str("TargetKeyId", &a.target_key_id)) return f.Bad("TargetKeyId");
  if (!f.I64("CreationDate", &a.creation_date)) return f.Bad("CreationDate");
  if (!f.I64("LastUpdatedDate", &a.last_updated_date)) return f.Bad("LastUpdatedDate");
  return a;
}

// ---- KdfParams ----------------------------------------------------------------------------------

Result<std::string> EncodeKdfParams(const KdfParams& k) {
  json j = {{"v", kRecordVersion},
            {"Algorithm", "scrypt"},
            {"Salt", HexEncode(k.salt)},
            {"N", k.n},
            {"r", k.r},
            {"p", k.p}};
  return Dump(j, "kdf params");
}

static Result<KdfParams> DecodeKdfParamsUnguarded(std::string_view text) {
  KMSFS_ASSIGN_OR_RETURN(json j, ParseRecord(text, "kdf params"));
  Fields f(j, "kdf params");
  KdfParams k;
  std::string algorithm;
  std::string salt;
  if (!f.Str("Algorithm", &algorithm) || algorithm != "scrypt") return f.Bad("Algorithm");
  if (!f.Str("Salt", &salt) || !HexDecode(salt, &k.salt) || k.salt.empty()) return f.Bad("Salt");
  if (!f.U64("N", std::numeric_limits<uint64_t>::max(), &k.n)) return f.Bad("N");
  if (!f.U32("r", &k.r)) return f.Bad("r");
  if (!f.U32("p", &k.p)) return f.Bad("p");
  return k;
}

// ---- StateFormat --------------------------------------------------------------------------------

Result<std::string> EncodeStateFormat(const StateFormat& s) {
  json j = {
      {"v", kRecordVersion}, {"StateFormatVersion", s.version}, {"CreationDate", s.creation_date}};
  return Dump(j, "state format");
}

static Result<StateFormat> DecodeStateFormatUnguarded(std::string_view text) {
  KMSFS_ASSIGN_OR_RETURN(json j, ParseRecord(text, "state format"));
  Fields f(j, "state format");
  StateFormat s;
  if (!f.U32("StateFormatVersion", &s.version) || s.version == 0)
    return f.Bad("StateFormatVersion");
  if (!f.I64("CreationDate", &s.creation_date)) return f.Bad("CreationDate");
  return s;
}

// ---- ids and names ------------------------------------------------------------------------------

std::string KeyIdFromRandom(const std::array<uint8_t, 16>& random16) {
  uint8_t b[16];
  for (int i = 0; i < 16; ++i) b[i] = random16[i];
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4 (random)
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return std::string(out, 36);
}

bool IsValidKeyId(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (!IsLowerHex(s[i])) {
      return false;
    }
  }
  return s[14] == '4' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

Status ValidateAliasName(std::string_view name) {
  constexpr std::string_view kPrefix = "alias/";
  const auto bad = [&] {
    return Invalid(
        "invalid alias name: it must be alias/ followed by 1 to 250 of A-Z a-z 0-9 / _ -");
  };
  if (name.substr(0, kPrefix.size()) != kPrefix) return bad();
  const std::string_view rest = name.substr(kPrefix.size());
  if (rest.empty() || rest.size() > 250) return bad();
  for (char c : rest) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '/' || c == '_' || c == '-';
    if (!ok) return bad();
  }
  if (name.substr(0, 10) == "alias/aws/") {
    return Invalid("alias names beginning with alias/aws/ are reserved");
  }
  return Status::Ok();
}

Status ValidateKeyRecord(const KeyRecord& r) {
  if (!IsValidKeyId(r.key_id)) return Invalid("KeyId is not a key id");
  if (r.description.size() > kMaxDescription)
    return Invalid("Description is longer than 8192 bytes");
  if (r.tags.size() > kMaxTags) return Invalid("more than 50 Tags");
  std::set<std::string_view> tag_keys;
  for (const KeyTag& t : r.tags) {
    if (t.tag_key.empty() || t.tag_key.size() > kMaxTagKey)
      return Invalid("TagKey must be 1 to 128 bytes");
    if (t.tag_value.size() > kMaxTagValue) return Invalid("TagValue is longer than 256 bytes");
    if (!tag_keys.insert(t.tag_key).second) return Invalid("duplicate TagKey " + t.tag_key);
  }
  if (r.policy.size() > kMaxPolicy) return Invalid("Policy is longer than 32 KiB");
  if (r.primary_version == 0) return Invalid("PrimaryVersion must be at least 1");
  const bool deleting =
      r.key_state == KeyState::kPendingDeletion || r.key_state == KeyState::kDestroyed;
  if (deleting != r.deletion_date.has_value()) {
    return Invalid("DeletionDate must be set exactly when the key is PendingDeletion or Destroyed");
  }
  if (r.rotation_enabled) {
    if (r.rotation_period_in_days == 0 || r.rotation_period_in_days > kMaxRotationPeriodDays) {
      return Invalid("RotationPeriodInDays must be 1 to 2560");
    }
    if (!r.next_rotation_date)
      return Invalid("NextRotationDate must be set when rotation is enabled");
  } else if (r.next_rotation_date) {
    return Invalid("NextRotationDate must be unset when rotation is disabled");
  }
  if (r.key_usage != "ENCRYPT_DECRYPT") return Invalid("KeyUsage must be ENCRYPT_DECRYPT");
  if (r.key_spec != "SYMMETRIC_DEFAULT") return Invalid("KeySpec must be SYMMETRIC_DEFAULT");
  if (r.origin.empty()) return Invalid("Origin must be set");
  return Status::Ok();
}

std::string VersionKey(std::string_view key_id, uint32_t version) {
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", version);
  std::string k(key_id);
  k += '/';
  k.append(hex, 8);
  return k;
}

bool ParseVersionKey(std::string_view key, std::string* key_id, uint32_t* version) {
  const size_t slash = key.rfind('/');
  if (slash == std::string_view::npos || key.size() - slash - 1 != 8) return false;
  const std::string_view id = key.substr(0, slash);
  if (!IsValidKeyId(id)) return false;
  uint32_t v = 0;
  for (char c : key.substr(slash + 1)) {
    if (!IsLowerHex(c)) return false;
    v = (v << 4) | static_cast<uint32_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  }
  *key_id = std::string(id);
  *version = v;
  return true;
}

// ---- the public decoders: no exception escapes
// --------------------------------------------------- The field readers above check every type
// before reading, so nothing should throw; this is the backstop that turns any nlohmann::json
// exception we did not foresee into kCorrupt.

Result<KeyRecord> DecodeKeyRecord(std::string_view text) {
  return NoThrow<KeyRecord>([&] { return DecodeKeyRecordUnguarded(text); });
}

Result<KeyVersion> DecodeKeyVersion(std::string_view text) {
  return NoThrow<KeyVersion>([&] { return DecodeKeyVersionUnguarded(text); });
}

Result<AliasRecord> DecodeAlias(std::string_view text) {
  return NoThrow<AliasRecord>([&] { return DecodeAliasUnguarded(text); });
}

Result<KdfParams> DecodeKdfParams(std::string_view text) {
  return NoThrow<KdfParams>([&] { return DecodeKdfParamsUnguarded(text); });
}

Result<StateFormat> DecodeStateFormat(std::string_view text) {
  return NoThrow<StateFormat>([&] { return DecodeStateFormatUnguarded(text); });
}

}  // namespace kmsfs::keyd
