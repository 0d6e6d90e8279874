// CompiledPolicy::Parse: JSON text -> validated PolicyData. Every rejection names its location.
#include <cstdint>
#include <map>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "keyd/policy/policy.h"
#include "keyd/policy/policy_data.h"
#include "keyd/policy/text.h"

namespace kmsfs::keyd {
namespace policy_internal {
namespace {

constexpr KeyInfo kKeyInfo[] = {
    // name                     kind                             type                multi  caller
    {"kmsfs:Path", KeyKind::kPath, ValueType::kString, false, false},
    {"kmsfs:Volume", KeyKind::kVolume, ValueType::kString, false, false},
    {"kmsfs:Executable", KeyKind::kExecutable, ValueType::kString, false, true},
    {"kmsfs:Unit", KeyKind::kUnit, ValueType::kString, false, true},
    {"kmsfs:Uid", KeyKind::kUid, ValueType::kNumber, false, true},
    {"kmsfs:Gid", KeyKind::kGid, ValueType::kNumber, true, true},
    {"kmsfs:User", KeyKind::kUser, ValueType::kString, false, true},
    {"kmsfs:Group", KeyKind::kGroup, ValueType::kString, true, true},
    {"kmsfs:Forwarded", KeyKind::kForwarded, ValueType::kBool, false, false},
    {"kms:EncryptionContextKeys", KeyKind::kEncryptionContextKeys, ValueType::kString, true, false},
};
constexpr KeyInfo kEncryptionContextKey = {"kms:EncryptionContext:", KeyKind::kEncryptionContext,
                                           ValueType::kString, false, false};
constexpr std::string_view kContextPrefix = "kms:EncryptionContext:";

}  // namespace

const KeyInfo* FindConditionKey(std::string_view name, std::string* context_key) {
  for (const KeyInfo& k : kKeyInfo) {
    if (k.name == name) return &k;
  }
  if (name.size() > kContextPrefix.size() &&
      name.substr(0, kContextPrefix.size()) == kContextPrefix) {
    *context_key = std::string(name.substr(kContextPrefix.size()));
    return &kEncryptionContextKey;
  }
  return nullptr;
}

std::string_view SuggestConditionKey(std::string_view name) {
  for (const KeyInfo& k : kKeyInfo) {
    if (EqualsIgnoreAsciiCase(k.name, name)) return k.name;
  }
  if (name.size() > kContextPrefix.size() &&
      EqualsIgnoreAsciiCase(name.substr(0, kContextPrefix.size()), kContextPrefix)) {
    return kContextPrefix;
  }
  return {};
}

}  // namespace policy_internal

namespace {

using namespace policy_internal;  // NOLINT(google-build-using-namespace): this file implements it

constexpr size_t kMaxDepth = 16;  // the deepest valid policy nests 6 levels
constexpr size_t kMaxSidBytes = 128;
constexpr size_t kMaxNameBytes = 256;     // user, group, unit names; context key names
constexpr size_t kMaxValueBytes = 1024;   // one condition value or pattern
constexpr uint64_t kMaxId = 0xFFFFFFFEu;  // (uid_t)-1 is "no id", never a principal
constexpr uint64_t kMaxNumber = 0xFFFFFFFFu;
constexpr std::string_view kVersion = "2012-10-17";

// ---------------------------------------------------------------------------------------------
// A minimal DOM built by our own SAX handler, so that duplicate keys are rejected (nlohmann's DOM
// silently keeps one, and "Effect": "Deny", "Effect": "Allow" must not depend on which), nesting
// is bounded, and no nlohmann accessor (which throws) is ever called on untrusted input.

struct JsonMember;
struct JsonValue {
  enum class Kind : uint8_t { kNull, kBool, kInteger, kUnsigned, kFloat, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  int64_t integer = 0;
  uint64_t unsigned_value = 0;
  std::string string;
  std::vector<JsonValue> array;
  std::vector<JsonMember> object;  // in document order
};
struct JsonMember {
  std::string key;
  JsonValue value;
};

std::string ChildLocation(const std::string& parent, std::string_view key) {
  std::string loc = parent;
  if (!loc.empty()) loc.push_back('.');
  AppendSanitized(&loc, key, 128);
  return loc;
}

std::string IndexLocation(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

Error Bad(const std::string& location, std::string_view problem) {
  std::string msg = location.empty() ? std::string("policy") : location;
  msg += ": ";
  msg += problem;
  return Error(Code::kInvalidArgument, std::move(msg));
}

class DomBuilder {
 public:
  using Json = nlohmann::json;

  bool null() {
    Add(JsonValue{});
    return true;
  }
  bool boolean(bool v) {
    JsonValue j;
    j.kind = JsonValue::Kind::kBool;
    j.boolean = v;
    Add(std::move(j));
    return true;
  }
  bool number_integer(Json::number_integer_t v) {
    JsonValue j;
    j.kind = JsonValue::Kind::kInteger;
    j.integer = v;
    Add(std::move(j));
    return true;
  }
  bool number_unsigned(Json::number_unsigned_t v) {
    JsonValue j;
    j.kind = JsonValue::Kind::kUnsigned;
    j.unsigned_value = v;
    Add(std::move(j));
    return true;
  }
  bool number_float(Json::number_float_t /*v*/, const Json::string_t& text) {
    JsonValue j;
    j.kind = JsonValue::Kind::kFloat;
    j.string = text;  // kept only for messages; no policy field takes a fraction
    Add(std::move(j));
    return true;
  }
  bool string(Json::string_t& v) {
    JsonValue j;
    j.kind = JsonValue::Kind::kString;
    j.string = std::move(v);
    Add(std::move(j));
    return true;
  }
  bool binary(Json::binary_t& /*v*/) {  // only reachable from binary formats; never for JSON
    error_ = "policy: binary values are not JSON";
    return false;
  }
  bool start_object(std::size_t /*elements*/) { return Open(JsonValue::Kind::kObject); }
  bool key(Json::string_t& k) {
    Frame& f = frames_.back();
    if (!f.keys.insert(k).second) {
      error_ = Bad(ChildLocation(f.location, k), "duplicate field").message();
      return false;
    }
    f.pending_key = std::move(k);
    return true;
  }
  bool end_object() {
    frames_.pop_back();
    return true;
  }
  bool start_array(std::size_t /*elements*/) { return Open(JsonValue::Kind::kArray); }
  bool end_array() {
    frames_.pop_back();
    return true;
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) {
    // what() is "[json.exception.parse_error.101] parse error at line 1, column 3: ..."; drop the
    // bracketed id and sanitize, since the message quotes the offending input.
    std::string_view what = ex.what();
    if (const size_t close = what.find("] ");
        !what.empty() && what[0] == '[' && close != std::string_view::npos) {
      what.remove_prefix(close + 2);
    }
    error_ = "policy: invalid JSON: ";
    AppendSanitized(&error_, what, 200);
    return false;
  }

  const std::string& error() const { return error_; }
  bool has_root() const { return has_root_; }
  const JsonValue& root() const { return root_; }

 private:
  struct Frame {
    JsonValue* value;  // points into the parent's vector, which cannot grow while this is open
    std::string location;
    std::unordered_set<std::string> keys;
    std::string pending_key;
  };

  // Places `v` where the parser is: as the root, the next array element, or the pending key's
  // value. Returns where it now lives.
  JsonValue* Add(JsonValue v) {
    if (frames_.empty()) {
      root_ = std::move(v);
      has_root_ = true;
      return &root_;
    }
    Frame& f = frames_.back();
    if (f.value->kind == JsonValue::Kind::kArray) {
      f.value->array.push_back(std::move(v));
      return &f.value->array.back();
    }
    f.value->object.push_back(JsonMember{f.pending_key, std::move(v)});
    return &f.value->object.back().value;
  }

  bool Open(JsonValue::Kind kind) {
    if (frames_.size() >= kMaxDepth) {
      error_ = "policy: nested deeper than " + std::to_string(kMaxDepth) + " levels";
      return false;
    }
    std::string location;
    if (!frames_.empty()) {
      const Frame& parent = frames_.back();
      location = parent.value->kind == JsonValue::Kind::kArray
                     ? IndexLocation(parent.location, parent.value->array.size())
                     : ChildLocation(parent.location, parent.pending_key);
    }
    JsonValue j;
    j.kind = kind;
    JsonValue* where = Add(std::move(j));
    frames_.push_back(Frame{where, std::move(location), {}, {}});
    return true;
  }

  JsonValue root_;
  bool has_root_ = false;
  std::vector<Frame> frames_;
  std::string error_;
};

// ---------------------------------------------------------------------------------------------
// Validation helpers.

struct Item {
  const JsonValue* value;
  std::string location;
};

// A field that takes "one value or a non-empty array of values".
Result<std::vector<Item>> OneOrMany(const JsonValue& v, const std::string& loc,
                                    std::string_view expected) {
  std::vector<Item> items;
  if (v.kind == JsonValue::Kind::kArray) {
    if (v.array.empty()) return Bad(loc, "must not be an empty array");
    for (size_t i = 0; i < v.array.size(); ++i) {
      const JsonValue& e = v.array[i];
      if (e.kind == JsonValue::Kind::kArray || e.kind == JsonValue::Kind::kObject) {
        return Bad(IndexLocation(loc, i), std::string("must be ") + std::string(expected));
      }
      items.push_back(Item{&e, IndexLocation(loc, i)});
    }
    return items;
  }
  if (v.kind == JsonValue::Kind::kObject) {
    return Bad(loc, std::string("must be ") + std::string(expected) + " or an array of them");
  }
  items.push_back(Item{&v, loc});
  return items;
}

bool HasControl(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return true;
  }
  return false;
}

// Unsigned integer from a JSON number or a string of decimal digits ("1000"), as AWS policies
// often quote numbers. Rejects signs, fractions, exponents, leading '+', and values above `max`.
std::optional<uint64_t> ParseUnsigned(const JsonValue& v, uint64_t max) {
  if (v.kind == JsonValue::Kind::kUnsigned) {
    return v.unsigned_value <= max ? std::optional<uint64_t>(v.unsigned_value) : std::nullopt;
  }
  if (v.kind == JsonValue::Kind::kString) {
    const std::string& s = v.string;
    if (s.empty() || s.size() > 10) return std::nullopt;
    uint64_t n = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    return n <= max ? std::optional<uint64_t>(n) : std::nullopt;
  }
  return std::nullopt;
}

std::optional<bool> ParseBool(const JsonValue& v) {
  if (v.kind == JsonValue::Kind::kBool) return v.boolean;
  if (v.kind == JsonValue::Kind::kString) {
    if (v.string == "true") return true;
    if (v.string == "false") return false;
  }
  return std::nullopt;
}

// User and group names: what NSS can return, minus what would make a policy ambiguous.
Status ValidateAccountName(const std::string& name, const std::string& loc, const char* what) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return Bad(loc, std::string(what) + " name must be 1 to 256 bytes");
  }
  bool all_digits = true;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7F || c == ':' || c == '/' || c == ',' || c == '*' || c == '?') {
      return Bad(loc, std::string("invalid ") + what + " name " + Quote(name) +
                          " (no spaces, control characters, ':', '/', ',', '*' or '?')");
    }
    all_digits = all_digits && c >= '0' && c <= '9';
  }
  if (all_digits) {
    return Bad(loc, std::string(what) + " name " + Quote(name) + " is numeric; use " +
                        (std::string_view(what) == "user" ? "Uid" : "Gid") + " for numeric ids");
  }
  return Status::Ok();
}

// systemd unit names (systemd.unit(5)): [A-Za-z0-9:_.\\@-], a '.' before the type suffix.
Status ValidateUnitName(const std::string& name, const std::string& loc) {
  bool ok = !name.empty() && name.size() <= 255 && name.front() != '.' &&
            name.find('.') != std::string::npos && name.back() != '.';
  for (char c : name) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == ':' || c == '_' || c == '.' || c == '\\' ||
                         c == '@' || c == '-';
    ok = ok && allowed;
  }
  if (!ok) {
    return Bad(loc, "invalid systemd unit name " + Quote(name) +
                        " (expected e.g. \"postgresql.service\"; no wildcards)");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Condition operators.

struct OperatorSpec {
  std::string_view name;
  OpKind kind;
  bool negated;
};
constexpr OperatorSpec kOperators[] = {
    {"StringEquals", OpKind::kStringEquals, false},
    {"StringNotEquals", OpKind::kStringEquals, true},
    {"StringEqualsIgnoreCase", OpKind::kStringEqualsIgnoreCase, false},
    {"StringNotEqualsIgnoreCase", OpKind::kStringEqualsIgnoreCase, true},
    {"StringLike", OpKind::kStringLike, false},
    {"StringNotLike", OpKind::kStringLike, true},
    {"NumericEquals", OpKind::kNumericEquals, false},
    {"NumericNotEquals", OpKind::kNumericEquals, true},
    {"NumericLessThan", OpKind::kNumericLessThan, false},
    {"NumericLessThanEquals", OpKind::kNumericLessThanEquals, false},
    {"NumericGreaterThan", OpKind::kNumericGreaterThan, false},
    {"NumericGreaterThanEquals", OpKind::kNumericGreaterThanEquals, false},
    {"Bool", OpKind::kBool, false},
    {"Null", OpKind::kNull, false},
};

struct ParsedOperator {
  const OperatorSpec* spec = nullptr;
  SetMode set = SetMode::kNone;
  bool if_exists = false;
  std::string canonical;  // spelled as documented
};

bool ConsumePrefix(std::string_view* s, std::string_view prefix, bool ignore_case) {
  if (s->size() < prefix.size()) return false;
  const std::string_view head = s->substr(0, prefix.size());
  if (ignore_case ? !EqualsIgnoreAsciiCase(head, prefix) : head != prefix) return false;
  s->remove_prefix(prefix.size());
  return true;
}

bool ConsumeSuffix(std::string_view* s, std::string_view suffix, bool ignore_case) {
  if (s->size() <= suffix.size()) return false;
  const std::string_view tail = s->substr(s->size() - suffix.size());
  if (ignore_case ? !EqualsIgnoreAsciiCase(tail, suffix) : tail != suffix) return false;
  s->remove_suffix(suffix.size());
  return true;
}

// "[ForAnyValue:|ForAllValues:]<Operator>[IfExists]". Null takes neither prefix nor suffix.
std::optional<ParsedOperator> ParseOperator(std::string_view name, bool ignore_case) {
  ParsedOperator op;
  if (ConsumePrefix(&name, "ForAnyValue:", ignore_case)) {
    op.set = SetMode::kForAnyValue;
    op.canonical = "ForAnyValue:";
  } else if (ConsumePrefix(&name, "ForAllValues:", ignore_case)) {
    op.set = SetMode::kForAllValues;
    op.canonical = "ForAllValues:";
  }
  // "StringEqualsIgnoreCase" must not lose "IfExists"-like tails by accident: try the whole name
  // first, then with the suffix removed.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string_view base = name;
    if (attempt == 1 && !ConsumeSuffix(&base, "IfExists", ignore_case)) break;
    for (const OperatorSpec& spec : kOperators) {
      const bool same = ignore_case ? EqualsIgnoreAsciiCase(spec.name, base) : spec.name == base;
      if (!same) continue;
      op.spec = &spec;
      op.if_exists = attempt == 1;
      op.canonical += spec.name;
      if (op.if_exists) op.canonical += "IfExists";
      if (spec.kind == OpKind::kNull && op.if_exists) return std::nullopt;  // no NullIfExists
      return op;
    }
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------

class Compiler {
 public:
  Status Run(const JsonValue& root, PolicyData* out) {
    if (root.kind != JsonValue::Kind::kObject) return Bad("", "must be a JSON object");
    const JsonValue* version = nullptr;
    const JsonValue* statements = nullptr;
    for (const JsonMember& m : root.object) {
      const std::string loc = ChildLocation("", m.key);
      if (m.key == "Version") {
        version = &m.value;
      } else if (m.key == "Id") {
        if (m.value.kind != JsonValue::Kind::kString || m.value.string.empty() ||
            m.value.string.size() > kMaxSidBytes || HasControl(m.value.string)) {
          return Bad(loc, "must be a string of 1 to 128 printable characters");
        }
        out->id = m.value.string;
      } else if (m.key == "Statement") {
        statements = &m.value;
      } else {
        return Bad(loc, "unknown field");
      }
    }
    if (version == nullptr) return Bad("", "missing \"Version\" (must be \"2012-10-17\")");
    if (version->kind != JsonValue::Kind::kString || version->string != kVersion) {
      return Bad("Version", "must be \"2012-10-17\"");
    }
    if (statements == nullptr) return Bad("", "missing \"Statement\"");
    if (statements->kind != JsonValue::Kind::kArray) {
      return Bad("Statement", "must be an array of statements");
    }
    if (statements->array.empty()) return Bad("Statement", "must contain at least one statement");
    out->statements.resize(statements->array.size());
    for (size_t i = 0; i < statements->array.size(); ++i) {
      KMSFS_RETURN_IF_ERROR(CompileStatement(statements->array[i], i, IndexLocation("Statement", i),
                                             &out->statements[i]));
    }
    return Status::Ok();
  }

 private:
  Status CompileStatement(const JsonValue& v, size_t index, const std::string& loc, Statement* st) {
    if (v.kind != JsonValue::Kind::kObject) return Bad(loc, "must be an object");
    const JsonValue *sid = nullptr, *effect = nullptr, *principal = nullptr, *action = nullptr,
                    *not_action = nullptr, *resource = nullptr, *condition = nullptr;
    for (const JsonMember& m : v.object) {
      const std::string mloc = ChildLocation(loc, m.key);
      if (m.key == "Sid") {
        sid = &m.value;
      } else if (m.key == "Effect") {
        effect = &m.value;
      } else if (m.key == "Principal") {
        principal = &m.value;
      } else if (m.key == "Action") {
        action = &m.value;
      } else if (m.key == "NotAction") {
        not_action = &m.value;
      } else if (m.key == "Resource") {
        resource = &m.value;
      } else if (m.key == "Condition") {
        condition = &m.value;
      } else if (m.key == "NotPrincipal") {
        return Bad(mloc, "not supported (use a Deny statement with a Principal instead)");
      } else if (m.key == "NotResource") {
        return Bad(mloc, "not supported (a key policy governs only its own key)");
      } else {
        return Bad(mloc, "unknown field");
      }
    }

    st->label = "Statement[" + std::to_string(index) + "]";
    if (sid != nullptr) KMSFS_RETURN_IF_ERROR(CompileSid(*sid, ChildLocation(loc, "Sid"), st));

    if (effect == nullptr) return Bad(loc, "missing \"Effect\"");
    if (effect->kind == JsonValue::Kind::kString && effect->string == "Allow") {
      st->effect = Effect::kAllow;
    } else if (effect->kind == JsonValue::Kind::kString && effect->string == "Deny") {
      st->effect = Effect::kDeny;
    } else {
      return Bad(ChildLocation(loc, "Effect"), "must be \"Allow\" or \"Deny\"");
    }

    if (principal == nullptr) return Bad(loc, "missing \"Principal\"");
    KMSFS_RETURN_IF_ERROR(CompilePrincipal(*principal, ChildLocation(loc, "Principal"), st));

    if ((action == nullptr) == (not_action == nullptr)) {
      return Bad(loc, "needs exactly one of \"Action\" or \"NotAction\"");
    }
    if (action != nullptr) {
      KMSFS_ASSIGN_OR_RETURN(st->actions, CompileActions(*action, ChildLocation(loc, "Action")));
    } else {
      const std::string aloc = ChildLocation(loc, "NotAction");
      KMSFS_ASSIGN_OR_RETURN(ActionSet excluded, CompileActions(*not_action, aloc));
      st->actions = kAllActions & ~excluded;
      if (st->actions == 0)
        return Bad(aloc, "excludes every action, so the statement never applies");
    }

    if (resource != nullptr) {
      const std::string rloc = ChildLocation(loc, "Resource");
      KMSFS_ASSIGN_OR_RETURN(auto items, OneOrMany(*resource, rloc, "\"*\""));
      for (const Item& it : items) {
        if (it.value->kind != JsonValue::Kind::kString || it.value->string != "*") {
          return Bad(it.location, "only \"*\" (this key) is supported");
        }
      }
    }

    if (condition != nullptr) {
      KMSFS_RETURN_IF_ERROR(CompileCondition(*condition, ChildLocation(loc, "Condition"), st));
    }
    return Status::Ok();
  }

  Status CompileSid(const JsonValue& v, const std::string& loc, Statement* st) {
    if (v.kind != JsonValue::Kind::kString) return Bad(loc, "must be a string");
    const std::string& sid = v.string;
    if (sid.empty() || sid.size() > kMaxSidBytes || HasControl(sid)) {
      return Bad(loc, "must be 1 to 128 printable characters");
    }
    // "Statement[3]" is how decisions name statements without a Sid; a Sid spelled like that
    // would make audit records ambiguous.
    if (sid.rfind("Statement[", 0) == 0) return Bad(loc, "must not start with \"Statement[\"");
    const auto [it, inserted] = sids_.emplace(sid, loc);
    if (!inserted) return Bad(loc, "duplicate Sid " + Quote(sid) + " (also at " + it->second + ")");
    st->label = sid;
    st->has_sid = true;
    return Status::Ok();
  }

  Status CompilePrincipal(const JsonValue& v, const std::string& loc, Statement* st) {
    if (v.kind == JsonValue::Kind::kString && v.string == "*") {
      st->any_principal = true;
      return Status::Ok();
    }
    if (v.kind != JsonValue::Kind::kObject) {
      return Bad(loc, "must be \"*\" or an object such as {\"Uid\": [0]}");
    }
    if (v.object.empty()) return Bad(loc, "must name at least one principal");
    for (const JsonMember& m : v.object) {
      const std::string mloc = ChildLocation(loc, m.key);
      PrincipalEntry::Kind kind;
      if (m.key == "Uid") {
        kind = PrincipalEntry::Kind::kUid;
      } else if (m.key == "Gid") {
        kind = PrincipalEntry::Kind::kGid;
      } else if (m.key == "User") {
        kind = PrincipalEntry::Kind::kUser;
      } else if (m.key == "Group") {
        kind = PrincipalEntry::Kind::kGroup;
      } else if (m.key == "Unit") {
        kind = PrincipalEntry::Kind::kUnit;
      } else {
        return Bad(mloc, "unknown principal type (expected Uid, Gid, User, Group or Unit)");
      }
      const bool numeric = kind == PrincipalEntry::Kind::kUid || kind == PrincipalEntry::Kind::kGid;
      KMSFS_ASSIGN_OR_RETURN(auto items,
                             OneOrMany(m.value, mloc, numeric ? "a numeric id" : "a name string"));
      for (Item& it : items) {
        PrincipalEntry e;
        e.kind = kind;
        e.location = std::move(it.location);
        if (numeric) {
          const auto id = ParseUnsigned(*it.value, kMaxId);
          if (!id) {
            return Bad(e.location, std::string("must be a ") + (m.key == "Uid" ? "uid" : "gid") +
                                       " (an integer from 0 to 4294967294)");
          }
          e.id = static_cast<uint32_t>(*id);
        } else {
          if (it.value->kind != JsonValue::Kind::kString)
            return Bad(e.location, "must be a string");
          e.name = it.value->string;
          if (kind == PrincipalEntry::Kind::kUnit) {
            KMSFS_RETURN_IF_ERROR(ValidateUnitName(e.name, e.location));
          } else {
            KMSFS_RETURN_IF_ERROR(ValidateAccountName(
                e.name, e.location, kind == PrincipalEntry::Kind::kUser ? "user" : "group"));
          }
        }
        st->principals.push_back(std::move(e));
      }
    }
    return Status::Ok();
  }

  Result<ActionSet> CompileActions(const JsonValue& v, const std::string& loc) {
    KMSFS_ASSIGN_OR_RETURN(auto items, OneOrMany(v, loc, "an action string"));
    ActionSet set = 0;
    for (const Item& it : items) {
      if (it.value->kind != JsonValue::Kind::kString) {
        return Bad(it.location, "must be an action string such as \"kms:Decrypt\"");
      }
      const std::string& name = it.value->string;
      ActionSet one = 0;
      if (name == "*" || name.rfind("kms:", 0) == 0) one = ExpandActionPattern(name);
      if (one == 0) {
        std::string msg = "unknown action " + Quote(name);
        if (auto hint = ActionFromNameIgnoreCase(name)) {
          msg += " (did you mean \"" + std::string(ActionName(*hint)) + "\"?)";
        }
        return Bad(it.location, msg);
      }
      set |= one;
    }
    return set;
  }

  Status CompileCondition(const JsonValue& v, const std::string& loc, Statement* st) {
    if (v.kind != JsonValue::Kind::kObject) {
      return Bad(loc, "must be an object of condition operators");
    }
    for (const JsonMember& m : v.object) {
      const std::string oloc = ChildLocation(loc, m.key);
      auto op = ParseOperator(m.key, /*ignore_case=*/false);
      if (!op) {
        std::string msg = "unknown condition operator";
        if (auto hint = ParseOperator(m.key, /*ignore_case=*/true)) {
          msg += " (did you mean \"" + hint->canonical + "\"?)";
        }
        return Bad(oloc, msg);
      }
      if (op->spec->kind == OpKind::kNull && op->set != SetMode::kNone) {
        return Bad(oloc, "Null cannot be combined with ForAnyValue: or ForAllValues:");
      }
      if (m.value.kind != JsonValue::Kind::kObject) {
        return Bad(oloc, "must be an object of condition keys and values");
      }
      if (m.value.object.empty()) return Bad(oloc, "must name at least one condition key");
      for (const JsonMember& k : m.value.object) {
        Clause c;
        KMSFS_RETURN_IF_ERROR(CompileClause(*op, k, ChildLocation(oloc, k.key), &c));
        st->clauses.push_back(std::move(c));
      }
    }
    return Status::Ok();
  }

  Status CompileClause(const ParsedOperator& op, const JsonMember& m, const std::string& loc,
                       Clause* c) {
    c->op = op.spec->kind;
    c->negated = op.spec->negated;
    c->if_exists = op.if_exists;
    c->set = op.set;
    c->location = loc;
    c->key = FindConditionKey(m.key, &c->context_key);
    if (c->key == nullptr) {
      std::string msg = "unknown condition key";
      if (std::string_view hint = SuggestConditionKey(m.key); !hint.empty()) {
        msg += " (did you mean \"" + std::string(hint) + (hint.back() == ':' ? "...\"?)" : "\"?)");
      }
      return Bad(loc, msg);
    }
    if (c->key->kind == KeyKind::kEncryptionContext &&
        (c->context_key.size() > kMaxNameBytes || HasControl(c->context_key))) {
      return Bad(loc, "encryption context key name must be 1 to 256 printable characters");
    }

    // Operator and key types must agree: a NumericEquals on a path is a mistake, not a false.
    const ValueType type = c->key->type;
    const char* type_name = type == ValueType::kString   ? "a string key"
                            : type == ValueType::kNumber ? "a numeric key"
                                                         : "a boolean key";
    bool fits;
    switch (c->op) {
      case OpKind::kStringEquals:
      case OpKind::kStringEqualsIgnoreCase:
      case OpKind::kStringLike:
        fits = type == ValueType::kString;
        break;
      case OpKind::kBool:
        fits = type == ValueType::kBool;
        break;
      case OpKind::kNull:
        fits = true;
        break;
      default:
        fits = type == ValueType::kNumber;
        break;
    }
    if (!fits) {
      return Bad(loc, op.canonical + " does not apply to " + std::string(c->key->name) + " (" +
                          type_name + ")");
    }

    KMSFS_ASSIGN_OR_RETURN(auto items, OneOrMany(m.value, loc, "a value"));
    if (c->op == OpKind::kNull) {
      const auto b = items.size() == 1 ? ParseBool(*items[0].value) : std::nullopt;
      if (!b) return Bad(loc, "Null takes one value, \"true\" (key absent) or \"false\" (present)");
      c->null_expects_absent = *b;
      return Status::Ok();
    }
    for (const Item& it : items) {
      switch (type) {
        case ValueType::kBool: {
          const auto b = ParseBool(*it.value);
          if (!b) return Bad(it.location, "must be \"true\" or \"false\"");
          (*b ? c->bool_true : c->bool_false) = true;
          break;
        }
        case ValueType::kNumber: {
          const auto n = ParseUnsigned(*it.value, kMaxNumber);
          if (!n) return Bad(it.location, "must be an integer from 0 to 4294967295");
          c->numbers.push_back(static_cast<int64_t>(*n));
          break;
        }
        case ValueType::kString:
          KMSFS_RETURN_IF_ERROR(CompileStringValue(*it.value, it.location, c));
          break;
      }
    }
    return Status::Ok();
  }

  Status CompileStringValue(const JsonValue& v, const std::string& loc, Clause* c) {
    if (v.kind != JsonValue::Kind::kString) return Bad(loc, "must be a string");
    const std::string& s = v.string;
    if (s.find('\0') != std::string::npos) return Bad(loc, "must not contain a NUL byte");
    if (s.size() > kMaxValueBytes) return Bad(loc, "longer than 1024 bytes");
    // AWS would substitute "${aws:username}"; we do not, and silently matching the literal text
    // would turn a Deny into a no-op.
    if (s.find("${") != std::string::npos) {
      return Bad(loc, "policy variables (\"${...}\") are not supported");
    }
    if (c->key->kind == KeyKind::kPath) {
      if (c->op == OpKind::kStringLike) {
        auto glob = PathGlob::Compile(s);
        if (!glob.ok()) return Bad(loc, glob.error().message());
        c->path_globs.push_back(std::move(*glob));
        return Status::Ok();
      }
      if (Status st = ValidateLiteralPath(s); !st.ok()) return Bad(loc, st.error().message());
    }
    if (c->op == OpKind::kStringEqualsIgnoreCase) {
      std::string lower = s;
      for (char& ch : lower) ch = AsciiLower(ch);
      c->strings.push_back(std::move(lower));
    } else {
      c->strings.push_back(s);
    }
    return Status::Ok();
  }

  std::map<std::string, std::string> sids_;  // Sid -> location of its first use
};

}  // namespace

Result<CompiledPolicy> CompiledPolicy::Parse(std::string_view json_text) {
  try {
    if (json_text.size() > kMaxPolicyBytes) {
      return Bad("", std::to_string(json_text.size()) + " bytes exceeds the " +
                         std::to_string(kMaxPolicyBytes) + "-byte limit");
    }
    DomBuilder dom;
    const bool parsed = nlohmann::json::sax_parse(json_text.begin(), json_text.end(), &dom);
    if (!parsed || !dom.error().empty() || !dom.has_root()) {
      return Error(Code::kInvalidArgument,
                   dom.error().empty() ? std::string("policy: invalid JSON") : dom.error());
    }
    auto data = std::make_shared<PolicyData>();
    Compiler compiler;
    KMSFS_RETURN_IF_ERROR(compiler.Run(dom.root(), data.get()));
    return CompiledPolicy(std::move(data));
  } catch (const std::bad_alloc&) {
    return Error(Code::kUnavailable, "policy: out of memory while parsing");
  } catch (...) {
    return Error(Code::kInternal, "policy: internal error while parsing");
  }
}

}  // namespace kmsfs::keyd
