// The compiled form of a key policy: what Parse produces and Evaluate walks. Internal to
// keyd/policy.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "keyd/policy/action.h"
#include "keyd/policy/authz.h"
#include "keyd/policy/glob.h"

namespace kmsfs::keyd::policy_internal {

// Condition keys. Their value types, cardinality and "absence" semantics live in kKeyInfo.
enum class KeyKind : uint8_t {
  kPath,
  kVolume,
  kExecutable,
  kUnit,
  kUid,
  kGid,
  kUser,
  kGroup,
  kForwarded,
  kEncryptionContext,      // kms:EncryptionContext:<Clause::context_key>
  kEncryptionContextKeys,  // the set of context key names
};

enum class ValueType : uint8_t { kString, kNumber, kBool };

struct KeyInfo {
  std::string_view name;
  KeyKind kind;
  ValueType type;
  bool multi_valued;
  // A caller attribute is something keyd determines about the caller (unit, executable, names).
  // Its absence means "could not be determined", i.e. doubt; a request attribute's absence (no
  // path, no context entry) is a plain fact about the request. See docs/policy.md.
  bool caller_attribute;
};

// The KeyInfo for a condition key name (exact, case-sensitive), or nullptr. For
// "kms:EncryptionContext:<name>" sets *context_key to <name>.
const KeyInfo* FindConditionKey(std::string_view name, std::string* context_key);
// A known key name equal to `name` ignoring ASCII case (for "did you mean" hints), or empty.
std::string_view SuggestConditionKey(std::string_view name);

enum class OpKind : uint8_t {
  kStringEquals,
  kStringEqualsIgnoreCase,
  kStringLike,
  kNumericEquals,
  kNumericLessThan,
  kNumericLessThanEquals,
  kNumericGreaterThan,
  kNumericGreaterThanEquals,
  kBool,
  kNull,
};

enum class SetMode : uint8_t { kNone, kForAnyValue, kForAllValues };

// One (operator, key) pair of a Condition block with its values.
struct Clause {
  OpKind op = OpKind::kStringEquals;
  // StringNotEquals is kStringEquals with negated = true: the element test is NOT(any value
  // matches), i.e. the NOR over the values AWS specifies.
  bool negated = false;
  bool if_exists = false;
  SetMode set = SetMode::kNone;
  const KeyInfo* key = nullptr;
  std::string context_key;           // for kEncryptionContext
  std::vector<std::string> strings;  // string ops; lower-cased for kStringEqualsIgnoreCase
  std::vector<PathGlob> path_globs;  // kStringLike on kmsfs:Path
  std::vector<int64_t> numbers;      // numeric ops
  bool bool_true = false;            // kBool: which values were listed
  bool bool_false = false;
  bool null_expects_absent = false;  // kNull: "true" means the key must be absent
  std::string location;              // "Statement[0].Condition.StringLike.kmsfs:Path"
};

struct PrincipalEntry {
  enum class Kind : uint8_t { kUid, kGid, kUser, kGroup, kUnit };
  Kind kind = Kind::kUid;
  uint32_t id = 0;   // kUid, kGid
  std::string name;  // kUser, kGroup, kUnit
  std::string location;
};

struct Statement {
  std::string label;  // Sid, or "Statement[i]"
  bool has_sid = false;
  Effect effect = Effect::kDeny;
  ActionSet actions = 0;  // already complemented for NotAction
  bool any_principal = false;
  std::vector<PrincipalEntry> principals;  // ORed
  std::vector<Clause> clauses;             // ANDed
};

struct PolicyData {
  std::string id;
  std::vector<Statement> statements;
};

}  // namespace kmsfs::keyd::policy_internal
