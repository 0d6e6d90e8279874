#include "keyd/audit/record_codec.h"

#include <cstdio>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "common/base/utf8.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr std::string_view kPrevHashMember = ",\"PrevHash\":\"";
constexpr std::string_view kHashMember = "\",\"Hash\":\"";
constexpr std::string_view kRecordEnd = "\"}";
constexpr size_t kHexLen = 2 * crypto::kSha256Len;
constexpr size_t kSuffixLen =
    kPrevHashMember.size() + kHexLen + kHashMember.size() + kHexLen + kRecordEnd.size();

ordered_json PrincipalJson(const Principal& p) {
  ordered_json j = ordered_json::object();
  j["Uid"] = static_cast<uint32_t>(p.uid);
  j["Gid"] = static_cast<uint32_t>(p.gid);
  j["Pid"] = static_cast<int64_t>(p.pid);
  j["Executable"] = p.executable;
  j["Unit"] = p.unit;
  return j;
}

Error Corrupt(const std::string& what) {
  return Error(Code::kCorrupt, "audit record: " + what + " is missing or malformed");
}

// Strict readers: every member must be present with the right type. They check before reading,
// so nothing below throws on data.
Status ReadString(const json& j, const char* name, std::string* out) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) return Corrupt(name);
  *out = it->get<std::string>();
  return Status::Ok();
}

template <class T>
Status ReadUnsigned(const json& j, const char* name, T* out) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_number_unsigned() ||
      it->get<uint64_t>() > std::numeric_limits<T>::max()) {
    return Corrupt(name);
  }
  *out = static_cast<T>(it->get<uint64_t>());
  return Status::Ok();
}

Result<Principal> ReadPrincipal(const json& j, const char* name) {
  if (!j.is_object()) return Corrupt(name);
  Principal p;
  uint32_t uid = 0, gid = 0;
  KMSFS_RETURN_IF_ERROR(ReadUnsigned(j, "Uid", &uid));
  KMSFS_RETURN_IF_ERROR(ReadUnsigned(j, "Gid", &gid));
  auto pid = j.find("Pid");
  if (pid == j.end() || !pid->is_number_integer()) return Corrupt(std::string(name) + ".Pid");
  p.uid = static_cast<uid_t>(uid);
  p.gid = static_cast<gid_t>(gid);
  p.pid = static_cast<pid_t>(pid->get<int64_t>());
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Executable", &p.executable));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Unit", &p.unit));
  return p;
}

Status ReadDigest(const json& j, const char* name, crypto::Sha256Digest* out) {
  std::string hex;
  KMSFS_RETURN_IF_ERROR(ReadString(j, name, &hex));
  if (!ParseDigestHex(hex, out)) return Corrupt(name);
  return Status::Ok();
}

Result<TrailRecord> DecodeUnguarded(std::string_view stored) {
  json j = json::parse(stored, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corrupt("document");
  TrailRecord t;
  AuditRecord& r = t.record;
  KMSFS_RETURN_IF_ERROR(ReadUnsigned(j, "Sequence", &r.sequence));
  std::string time;
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Time", &time));
  if (!ParseTime(time, &r.time_us)) return Corrupt("Time");
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Operation", &r.operation));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "KeyId", &r.key_id));
  KMSFS_RETURN_IF_ERROR(ReadUnsigned(j, "KeyVersion", &r.key_version));
  auto principal = j.find("Principal");
  if (principal == j.end()) return Corrupt("Principal");
  KMSFS_ASSIGN_OR_RETURN(r.principal, ReadPrincipal(*principal, "Principal"));
  auto forwarder = j.find("Forwarder");
  if (forwarder == j.end()) return Corrupt("Forwarder");
  if (!forwarder->is_null()) {
    KMSFS_ASSIGN_OR_RETURN(Principal f, ReadPrincipal(*forwarder, "Forwarder"));
    r.forwarder = std::move(f);
  }
  auto context = j.find("EncryptionContext");
  if (context == j.end() || !context->is_object()) return Corrupt("EncryptionContext");
  for (const auto& [k, v] : context->items()) {
    if (!v.is_string()) return Corrupt("EncryptionContext");
    r.encryption_context[k] = v.get<std::string>();
  }
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Path", &r.path));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Decision", &r.decision));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Sid", &r.sid));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Outcome", &r.outcome));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Detail", &r.detail));
  KMSFS_RETURN_IF_ERROR(ReadDigest(j, "PrevHash", &t.prev_hash));
  KMSFS_RETURN_IF_ERROR(ReadDigest(j, "Hash", &t.hash));
  t.json = std::string(stored);
  return t;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case is not canonical
}

// Reads `n` decimal digits at `p`; false on a non-digit.
bool Digits(std::string_view s, size_t p, size_t n, int* out) {
  int v = 0;
  for (size_t i = p; i < p + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

}  // namespace

namespace {

// `s` as a JSON string exactly as nlohmann's dump(ensure_ascii=false) writes a valid UTF-8
// string: ", \\ and the short escapes, other control characters as \u00xx, everything else
// verbatim.
void AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

void AppendMember(std::string& out, std::string_view name, std::string_view value) {
  out += '"';
  out += name;  // our own member names: nothing to escape
  out += "\":";
  AppendJsonString(out, value);
}

void AppendPrincipal(std::string& out, const Principal& p) {
  out += "{\"Uid\":";
  out += std::to_string(static_cast<uint32_t>(p.uid));
  out += ",\"Gid\":";
  out += std::to_string(static_cast<uint32_t>(p.gid));
  out += ",\"Pid\":";
  out += std::to_string(static_cast<int64_t>(p.pid));
  out += ',';
  AppendMember(out, "Executable", p.executable);
  out += ',';
  AppendMember(out, "Unit", p.unit);
  out += '}';
}

bool PrincipalIsUtf8(const Principal& p) {
  return IsValidUtf8(p.executable) && IsValidUtf8(p.unit);
}

bool AllUtf8(const AuditRecord& r) {
  if (!IsValidUtf8(r.operation) || !IsValidUtf8(r.key_id) || !PrincipalIsUtf8(r.principal) ||
      (r.forwarder && !PrincipalIsUtf8(*r.forwarder)) || !IsValidUtf8(r.path) ||
      !IsValidUtf8(r.decision) || !IsValidUtf8(r.sid) || !IsValidUtf8(r.outcome) ||
      !IsValidUtf8(r.detail)) {
    return false;
  }
  for (const auto& [k, v] : r.encryption_context) {
    if (!IsValidUtf8(k) || !IsValidUtf8(v)) return false;
  }
  return true;
}

// The general encoder (any bytes; invalid UTF-8 becomes U+FFFD), through nlohmann.
std::string EncodeRecordBodyJson(const AuditRecord& r) {
  ordered_json j = ordered_json::object();
  j["Operation"] = r.operation;
  j["KeyId"] = r.key_id;
  j["KeyVersion"] = r.key_version;
  j["Principal"] = PrincipalJson(r.principal);
  j["Forwarder"] = r.forwarder ? PrincipalJson(*r.forwarder) : ordered_json(nullptr);
  ordered_json context = ordered_json::object();  // std::map order: sorted, deterministic
  for (const auto& [k, v] : r.encryption_context) context[k] = v;
  j["EncryptionContext"] = std::move(context);
  j["Path"] = r.path;
  j["Decision"] = r.decision;
  j["Sid"] = r.sid;
  j["Outcome"] = r.outcome;
  j["Detail"] = r.detail;
  std::string text =
      j.dump(-1, ' ', /*ensure_ascii=*/false, ordered_json::error_handler_t::replace);
  // Strip the braces: ComposeRecord puts Sequence and Time in front.
  return text.substr(1, text.size() - 2);
}

}  // namespace

// Every record of a request is encoded on its worker thread; building an ordered_json and
// dumping it was ~4 % of keyd's CPU in the Decrypt profile. The direct writer below gives the
// same bytes (record_codec_test compares the two) for the usual all-UTF-8 record; anything else
// takes the nlohmann path, which owns the U+FFFD replacement rules.
std::string EncodeRecordBody(const AuditRecord& r) {
  if (!AllUtf8(r)) return EncodeRecordBodyJson(r);
  std::string out;
  out.reserve(384 + r.path.size() + r.detail.size());
  AppendMember(out, "Operation", r.operation);
  out += ",\"KeyId\":";
  AppendJsonString(out, r.key_id);
  out += ",\"KeyVersion\":";
  out += std::to_string(r.key_version);
  out += ",\"Principal\":";
  AppendPrincipal(out, r.principal);
  out += ",\"Forwarder\":";
  if (r.forwarder) {
    AppendPrincipal(out, *r.forwarder);
  } else {
    out += "null";
  }
  out += ",\"EncryptionContext\":{";
  bool first = true;
  for (const auto& [k, v] : r.encryption_context) {  // std::map: sorted, as the nlohmann path
    if (!first) out += ',';
    first = false;
    AppendJsonString(out, k);
    out += ':';
    AppendJsonString(out, v);
  }
  out += "},";
  AppendMember(out, "Path", r.path);
  out += ',';
  AppendMember(out, "Decision", r.decision);
  out += ',';
  AppendMember(out, "Sid", r.sid);
  out += ',';
  AppendMember(out, "Outcome", r.outcome);
  out += ',';
  AppendMember(out, "Detail", r.detail);
  return out;
}

std::string ComposeRecord(uint64_t sequence, int64_t time_us, std::string_view body,
                          const crypto::Sha256Digest& prev_hash, crypto::Sha256Digest* hash) {
  std::string text;
  text.reserve(body.size() + 64 + kSuffixLen);
  text += "{\"Sequence\":";
  text += std::to_string(sequence);
  text += ",\"Time\":\"";
  text += FormatTime(time_us);
  text += "\",";
  text += body;
  text += '}';
  *hash = ChainHash(prev_hash, text);  // `text` is exactly the canonical bytes here
  text.pop_back();
  text += kPrevHashMember;
  text += DigestHex(prev_hash);
  text += kHashMember;
  text += DigestHex(*hash);
  text += kRecordEnd;
  return text;
}

std::optional<std::string> CanonicalBytes(std::string_view stored) {
  if (stored.size() <= kSuffixLen + 1 || stored.front() != '{') return std::nullopt;
  const size_t cut = stored.size() - kSuffixLen;
  std::string_view suffix = stored.substr(cut);
  crypto::Sha256Digest ignored;
  if (suffix.substr(0, kPrevHashMember.size()) != kPrevHashMember) return std::nullopt;
  suffix.remove_prefix(kPrevHashMember.size());
  if (!ParseDigestHex(suffix.substr(0, kHexLen), &ignored)) return std::nullopt;
  suffix.remove_prefix(kHexLen);
  if (suffix.substr(0, kHashMember.size()) != kHashMember) return std::nullopt;
  suffix.remove_prefix(kHashMember.size());
  if (!ParseDigestHex(suffix.substr(0, kHexLen), &ignored)) return std::nullopt;
  suffix.remove_prefix(kHexLen);
  if (suffix != kRecordEnd) return std::nullopt;
  std::string canonical(stored.substr(0, cut));
  canonical += '}';
  return canonical;
}

crypto::Sha256Digest ChainHash(const crypto::Sha256Digest& prev, std::string_view canonical) {
  return crypto::Sha256(ByteSpan(prev), AsBytes(canonical));
}

Result<TrailRecord> DecodeTrailRecord(std::string_view stored) {
  try {
    return DecodeUnguarded(stored);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception&) {
    return Corrupt("document");
  }
}

std::string FormatTime(int64_t time_us) {
  // Floor division, so times before 1970 still print a valid (if odd) timestamp.
  int64_t secs = time_us / 1000000;
  int64_t micros = time_us % 1000000;
  if (micros < 0) {
    micros += 1000000;
    secs -= 1;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(micros));
  return buf;
}

bool ParseTime(std::string_view s, int64_t* time_us) {
  // YYYY-MM-DDTHH:MM:SS.ffffffZ
  if (s.size() != 27 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
      s[16] != ':' || s[19] != '.' || s[26] != 'Z') {
    return false;
  }
  int year, mon, day, hour, min, sec, micros;
  if (!Digits(s, 0, 4, &year) || !Digits(s, 5, 2, &mon) || !Digits(s, 8, 2, &day) ||
      !Digits(s, 11, 2, &hour) || !Digits(s, 14, 2, &min) || !Digits(s, 17, 2, &sec) ||
      !Digits(s, 20, 6, &micros)) {
    return false;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  const std::time_t t = ::timegm(&tm);
  // timegm normalizes out-of-range fields (Feb 30 → Mar 2); a round trip rejects them.
  int64_t us = static_cast<int64_t>(t) * 1000000 + micros;
  if (FormatTime(us) != s) return false;
  *time_us = us;
  return true;
}

std::string EncodeCheckpoint(const Checkpoint& c) {
  ordered_json j = ordered_json::object();
  j["Sequence"] = c.sequence;
  j["Hash"] = DigestHex(c.hash);
  j["Time"] = FormatTime(c.time_us);
  return j.dump();
}

Result<Checkpoint> DecodeCheckpoint(std::string_view text) {
  try {
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return Error(Code::kCorrupt, "checkpoint: not a JSON object");
    }
    Checkpoint c;
    std::string time;
    Status s = ReadUnsigned(j, "Sequence", &c.sequence);
    if (s.ok()) s = ReadDigest(j, "Hash", &c.hash);
    if (s.ok()) s = ReadString(j, "Time", &time);
    if (s.ok() && !ParseTime(time, &c.time_us)) s = Corrupt("Time");
    if (!s.ok()) return Error(Code::kCorrupt, "checkpoint: " + s.error().message());
    return c;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception&) {
    return Error(Code::kCorrupt, "checkpoint: malformed JSON");
  }
}

std::string DigestHex(const crypto::Sha256Digest& digest) { return HexEncode(ByteSpan(digest)); }

bool ParseDigestHex(std::string_view hex, crypto::Sha256Digest* out) {
  if (hex.size() != kHexLen) return false;
  crypto::Sha256Digest d;
  for (size_t i = 0; i < d.size(); ++i) {
    const int hi = HexDigit(hex[2 * i]), lo = HexDigit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    d[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  *out = d;
  return true;
}

std::string SequenceKey(uint64_t sequence) {
  std::string key(8, '\0');
  PutU64(reinterpret_cast<uint8_t*>(key.data()), sequence);
  return key;
}

bool ParseSequenceKey(std::string_view key, uint64_t* sequence) {
  if (key.size() != 8) return false;
  *sequence = GetU64(reinterpret_cast<const uint8_t*>(key.data()));
  return true;
}

}  // namespace kmsfs::keyd
