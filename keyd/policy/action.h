// Action: the closed vocabulary of operations a key policy can allow or deny (AWS KMS names).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace kmsfs::keyd {

// Every key-scoped operation keyd performs. The service passes one of these in each AuthzRequest;
// policies name them as "kms:<Name>". Adding an action means adding it here and to kActionNames
// (action.cc); a stored policy that says "kms:*" then covers it on the next Parse.
enum class Action : uint8_t {
  // Cryptographic use.
  kDecrypt,
  kEncrypt,
  kGenerateDataKey,
  kGenerateDataKeyWithoutPlaintext,
  kReEncryptFrom,
  kReEncryptTo,
  // Administration.
  kDescribeKey,
  kGetKeyPolicy,
  kPutKeyPolicy,
  kEnableKey,
  kDisableKey,
  kScheduleKeyDeletion,
  kCancelKeyDeletion,
  kRotateKeyOnDemand,
  kEnableKeyRotation,
  kDisableKeyRotation,
  kGetKeyRotationStatus,
  kListKeyRotations,
  kCreateAlias,
  kUpdateAlias,
  kDeleteAlias,
  kUpdateKeyDescription,
  kRetireKeyVersion,
};
inline constexpr int kActionCount = static_cast<int>(Action::kRetireKeyVersion) + 1;

// A set of actions, one bit per Action. Policies are compiled to these so a statement's action
// test is a single AND.
using ActionSet = uint32_t;
static_assert(kActionCount <= 32, "ActionSet needs a wider type");
inline constexpr ActionSet kAllActions = (ActionSet{1} << kActionCount) - 1;
inline constexpr ActionSet ActionBit(Action a) { return ActionSet{1} << static_cast<int>(a); }

// "kms:Decrypt" for Action::kDecrypt. Returns "kms:?" for a value outside the enum.
std::string_view ActionName(Action action);

// The action named exactly (case-sensitive) `name`, e.g. "kms:Decrypt"; nullopt if unknown.
std::optional<Action> ActionFromName(std::string_view name);

// Expands a policy action pattern ("kms:Decrypt", "kms:Get*", "kms:ReEncrypt*", "kms:*", "*") to
// the known actions it matches. '*' matches any run of characters and '?' one character, as in
// AWS; matching is case-sensitive (our documented deviation: AWS folds case). Returns 0 when the
// pattern matches no known action, which the parser reports as an unknown action.
ActionSet ExpandActionPattern(std::string_view pattern);

// The known action whose name equals `name` ignoring ASCII case, for "did you mean" hints.
std::optional<Action> ActionFromNameIgnoreCase(std::string_view name);

}  // namespace kmsfs::keyd
