#include "common/format/volume_config.h"

#include <algorithm>
#include <exception>
#include <new>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/format/base64.h"
#include "common/format/block_layout.h"
#include "common/format/byte_reader.h"
#include "common/format/key_id.h"
#include "common/format/wrapped_blob.h"

namespace kmsfs::format {
namespace {

using internal::AppendBytes;
using internal::AppendU16;
using internal::AppendU32;
using Json = nlohmann::json;

constexpr std::string_view kKnownFeatures[] = {kFeatureInterleavedMetaV1, kFeatureSivNames,
                                               kFeatureLongNames, kFeatureHeaderLinks};
constexpr std::string_view kMandatoryFeatures[] = {kFeatureInterleavedMetaV1, kFeatureSivNames};
constexpr std::string_view kFields[] = {"Format",   "VolumeId",    "KeyId",     "BlockSize",
                                        "Features", "NameKeyBlob", "CreatedAt", "Mac"};
constexpr size_t kNameKeyLen = 32;  // the name key is a 256-bit data key
constexpr uint8_t kMacInputMagic[4] = {'K', 'M', 'C', 'F'};
// The config is an object holding one array: anything deeper is not a config.
constexpr int kMaxDepth = 2;

Error Corrupt(std::string_view what) {
  return Error(Code::kCorrupt, "kmsfs.conf: " + std::string(what));
}

bool IsKnownFeature(std::string_view f) {
  return std::find(std::begin(kKnownFeatures), std::end(kKnownFeatures), f) !=
         std::end(kKnownFeatures);
}

// A field or feature name is echoed in an error only if it is short and plain, so a hostile
// config can't put control characters or pages of text into logs.
std::string Quoted(std::string_view s) {
  const bool plain = s.size() <= 32 && std::all_of(s.begin(), s.end(), [](char c) {
                       return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              (c >= '0' && c <= '9') || c == '-' || c == '_';
                     });
  return plain ? "\"" + std::string(s) + "\"" : std::string("(unprintable)");
}

// Lower-case hex only: the canonical spelling, so a config has one text per value.
template <size_t N>
bool ParseLowerHex(std::string_view s, std::array<uint8_t, N>* out) {
  if (s.size() != 2 * N) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  Bytes b;
  if (!HexDecode(s, &b) || b.size() != N) return false;
  std::copy(b.begin(), b.end(), out->begin());
  return true;
}

// Every semantic rule of a config, shared by Parse (-> kCorrupt) and Validate
// (-> kInvalidArgument). Empty if the config is valid.
std::string Problem(const VolumeConfig& c) {
  if (c.format != VolumeConfig::kFormat) return "Format must be 1";
  if (internal::AllZero(c.volume_id)) return "VolumeId is all zero";
  if (!IsValidKeyIdOrAlias(c.key_id)) return "KeyId is neither a key id nor an alias";
  if (c.block_size != kBlockSize) return "BlockSize must be 4096";
  for (const std::string& f : c.features) {
    if (!IsKnownFeature(f)) return "unknown feature " + Quoted(f);
  }
  for (std::string_view f : kMandatoryFeatures) {
    if (!c.HasFeature(f)) return "missing mandatory feature " + Quoted(f);
  }
  auto blob = ParseWrappedBlob(c.name_key_blob);
  if (!blob.ok()) return "NameKeyBlob: " + blob.error().message();
  if (blob->ciphertext.size() != kNameKeyLen) return "NameKeyBlob is not a 256-bit key";
  if (!IsValidRfc3339(c.created_at)) return "CreatedAt is not an RFC 3339 date-time";
  return {};
}

// Tracks what nlohmann's parser does not: duplicate keys (it keeps the last one silently, so
// two readers could disagree on a value) and nesting depth.
struct ShapeCheck {
  std::vector<std::vector<std::string>> keys_per_object;
  bool duplicate = false;
  bool too_deep = false;

  bool OnEvent(int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth >= kMaxDepth) too_deep = true;
        if (event == Json::parse_event_t::object_start) keys_per_object.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!keys_per_object.empty()) keys_per_object.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys_per_object.empty() && parsed.is_string()) {
          auto& seen = keys_per_object.back();
          const auto& k = parsed.get_ref<const std::string&>();
          // Linear scan: a config object has 8 keys, and input size is capped.
          if (std::find(seen.begin(), seen.end(), k) != seen.end()) duplicate = true;
          if (!duplicate) seen.push_back(k);
        }
        break;
      default:
        break;
    }
    return true;
  }
};

const Json* Field(const Json& obj, const char* name) {
  auto it = obj.find(name);
  return it == obj.end() ? nullptr : &*it;
}

const std::string* StringField(const Json& obj, const char* name) {
  const Json* v = Field(obj, name);
  return (v != nullptr && v->is_string()) ? &v->get_ref<const std::string&>() : nullptr;
}

bool UintField(const Json& obj, const char* name, uint32_t* out) {
  const Json* v = Field(obj, name);
  if (v == nullptr || !v->is_number_unsigned()) return false;
  const uint64_t x = v->get<uint64_t>();
  if (x > UINT32_MAX) return false;
  *out = uint32_t(x);
  return true;
}

Result<VolumeConfig> ParseParsedJson(const Json& doc, const ShapeCheck& shape) {
  if (!doc.is_object()) return Corrupt("not a JSON object");
  if (shape.duplicate) return Corrupt("duplicate key");
  if (shape.too_deep) return Corrupt("nested too deeply");

  VolumeConfig c;
  // Format first: a newer kmsfs may have changed everything else.
  const Json* format = Field(doc, "Format");
  if (format == nullptr || !format->is_number_unsigned()) {
    return Corrupt("Format missing or not an integer");
  }
  if (format->get<uint64_t>() > VolumeConfig::kFormat) {
    return Error(Code::kFailedPrecondition,
                 "kmsfs.conf: Format " + std::to_string(format->get<uint64_t>()) +
                     " was written by a newer kmsfs; this kmsfs reads Format 1. Upgrade kmsfs.");
  }
  if (format->get<uint64_t>() == 0) return Corrupt("Format 0 does not exist");
  c.format = uint32_t(format->get<uint64_t>());

  for (const auto& item : doc.items()) {
    if (std::find(std::begin(kFields), std::end(kFields), item.key()) == std::end(kFields)) {
      return Corrupt("unknown field " + Quoted(item.key()));
    }
  }
  if (doc.size() != std::size(kFields)) return Corrupt("missing field");

  const std::string* s = StringField(doc, "VolumeId");
  if (s == nullptr || !ParseLowerHex(*s, &c.volume_id)) {
    return Corrupt("VolumeId must be 32 lower-case hex digits");
  }
  s = StringField(doc, "KeyId");
  if (s == nullptr) return Corrupt("KeyId must be a string");
  c.key_id = *s;
  if (!UintField(doc, "BlockSize", &c.block_size)) return Corrupt("BlockSize must be an integer");

  const Json* features = Field(doc, "Features");
  if (features == nullptr || !features->is_array()) return Corrupt("Features must be an array");
  for (const Json& f : *features) {
    if (!f.is_string()) return Corrupt("Features must hold strings");
    const auto& name = f.get_ref<const std::string&>();
    if (!IsKnownFeature(name)) {
      // Like a newer Format: the volume needs something this kmsfs does not have.
      return Error(Code::kFailedPrecondition,
                   "kmsfs.conf: feature " + Quoted(name) +
                       " is not supported by this kmsfs. Upgrade kmsfs.");
    }
    if (!c.features.insert(name).second) return Corrupt("duplicate feature");
  }

  s = StringField(doc, "NameKeyBlob");
  if (s == nullptr) return Corrupt("NameKeyBlob must be a string");
  if (s->size() > Base64EncodedLen(WrappedBlob::kMaxLen)) return Corrupt("NameKeyBlob too long");
  auto blob = Base64Decode(*s);
  if (!blob.ok()) return Corrupt("NameKeyBlob: " + blob.error().message());
  c.name_key_blob = std::move(blob).value();

  s = StringField(doc, "CreatedAt");
  if (s == nullptr) return Corrupt("CreatedAt must be a string");
  c.created_at = *s;

  s = StringField(doc, "Mac");
  if (s == nullptr || !ParseLowerHex(*s, &c.mac)) {
    return Corrupt("Mac must be 64 lower-case hex digits");
  }

  if (std::string problem = Problem(c); !problem.empty()) return Corrupt(problem);
  return c;
}

bool IsLeap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }
int DaysInMonth(int y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return (m == 2 && IsLeap(y)) ? 29 : kDays[m - 1];
}

}  // namespace

Result<VolumeConfig> ParseVolumeConfig(std::string_view text) {
  if (text.size() > kMaxVolumeConfigSize) return Corrupt("larger than 64 KiB");
  ShapeCheck shape;
  try {
    Json doc = Json::parse(
        text.begin(), text.end(),
        [&shape](int depth, Json::parse_event_t event, Json& parsed) {
          return shape.OnEvent(depth, event, parsed);
        },
        /*allow_exceptions=*/true, /*ignore_comments=*/false);
    return ParseParsedJson(doc, shape);
  } catch (const std::bad_alloc&) {
    throw;  // STYLE §3: out-of-memory is the one exception that may travel.
  } catch (const Json::exception&) {
    // The parser's message quotes input bytes; keep it out of logs.
    return Corrupt("not valid JSON");
  } catch (const std::exception&) {
    return Corrupt("not valid JSON");
  }
}

Status ValidateVolumeConfig(const VolumeConfig& config) {
  if (std::string problem = Problem(config); !problem.empty()) {
    return Error(Code::kInvalidArgument, "kmsfs.conf: " + problem);
  }
  return Status::Ok();
}

Result<std::string> SerializeVolumeConfig(const VolumeConfig& config) {
  KMSFS_RETURN_IF_ERROR(ValidateVolumeConfig(config));
  try {
    nlohmann::ordered_json j;
    j["Format"] = config.format;
    j["VolumeId"] = HexEncode(config.volume_id);
    j["KeyId"] = config.key_id;
    j["BlockSize"] = config.block_size;
    j["Features"] = std::vector<std::string>(config.features.begin(), config.features.end());
    j["NameKeyBlob"] = Base64Encode(config.name_key_blob);
    j["CreatedAt"] = config.created_at;
    j["Mac"] = HexEncode(config.mac);
    return j.dump(2) + "\n";
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception&) {
    // Unreachable after validation (every string is ASCII); kept so nothing escapes.
    return Error(Code::kInternal, "kmsfs.conf: JSON serialization failed");
  }
}

Result<Bytes> VolumeConfigMacInput(const VolumeConfig& c) {
  KMSFS_RETURN_IF_ERROR(ValidateVolumeConfig(c));
  // Validation bounds every length well below 2^16, so each u16 prefix is exact and the
  // encoding is injective: two different configs never yield the same MAC input.
  Bytes out;
  AppendBytes(&out, kMacInputMagic);
  AppendU32(&out, c.format);
  AppendBytes(&out, c.volume_id);
  AppendU16(&out, uint16_t(c.key_id.size()));
  AppendBytes(&out, AsBytes(c.key_id));
  AppendU32(&out, c.block_size);
  AppendU16(&out, uint16_t(c.features.size()));
  for (const std::string& f : c.features) {  // std::set: bytewise ascending
    AppendU16(&out, uint16_t(f.size()));
    AppendBytes(&out, AsBytes(f));
  }
  AppendU16(&out, uint16_t(c.name_key_blob.size()));
  AppendBytes(&out, c.name_key_blob);
  AppendU16(&out, uint16_t(c.created_at.size()));
  AppendBytes(&out, AsBytes(c.created_at));
  return out;
}

bool IsValidRfc3339(std::string_view s) {
  if (s.size() < 20 || s.size() > 35) return false;
  auto num = [&s](size_t pos, size_t n, int* v) {
    *v = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      *v = *v * 10 + (s[i] - '0');
    }
    return true;
  };
  int year, month, day, hour, minute, second;
  if (!num(0, 4, &year) || s[4] != '-' || !num(5, 2, &month) || s[7] != '-' || !num(8, 2, &day) ||
      s[10] != 'T' || !num(11, 2, &hour) || s[13] != ':' || !num(14, 2, &minute) || s[16] != ':' ||
      !num(17, 2, &second)) {
    return false;
  }
  if (month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, month)) return false;
  if (hour > 23 || minute > 59 || second > 60) return false;
  size_t i = 19;
  if (s[i] == '.') {
    const size_t start = ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i - start < 1 || i - start > 9) return false;
  }
  if (i >= s.size()) return false;
  if (s[i] == 'Z') return i + 1 == s.size();
  if (s[i] != '+' && s[i] != '-') return false;
  int off_h, off_m;
  if (s.size() != i + 6 || !num(i + 1, 2, &off_h) || s[i + 3] != ':' || !num(i + 4, 2, &off_m)) {
    return false;
  }
  return off_h <= 23 && off_m <= 59;
}

Result<std::string> Rfc3339Utc(int64_t unix_seconds) {
  constexpr int64_t kMax = 253402300799;  // 9999-12-31T23:59:59Z
  if (unix_seconds < 0 || unix_seconds > kMax) {
    return Error(Code::kInvalidArgument, "time outside years 1970..9999");
  }
  const int64_t days = unix_seconds / 86400;
  const int64_t secs = unix_seconds % 86400;
  // Civil-from-days (H. Hinnant's algorithm), for non-negative day counts.
  const int64_t z = days + 719468;
  const int64_t era = z / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const int64_t m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  std::string out;
  auto digits = [&out](int64_t v, int width) {
    std::string text(size_t(width), '0');
    for (int i = width - 1; i >= 0; --i, v /= 10) text[size_t(i)] = char('0' + v % 10);
    out += text;
  };
  digits(y, 4);
  out += '-';
  digits(m, 2);
  out += '-';
  digits(d, 2);
  out += 'T';
  digits(secs / 3600, 2);
  out += ':';
  digits(secs / 60 % 60, 2);
  out += ':';
  digits(secs % 60, 2);
  out += 'Z';
  return out;
}

}  // namespace kmsfs::format
