#include "keyd/policy/action.h"

#include <array>

#include "keyd/policy/glob.h"
#include "keyd/policy/text.h"

namespace kmsfs::keyd {
namespace {

// Indexed by Action; the static_assert below keeps it in step with the enum.
constexpr std::array<std::string_view, kActionCount> kActionNames = {
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:PutKeyPolicy",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
    "kms:EnableKeyRotation",
    "kms:DisableKeyRotation",
    "kms:GetKeyRotationStatus",
    "kms:ListKeyRotations",
    "kms:CreateAlias",
    "kms:UpdateAlias",
    "kms:DeleteAlias",
    "kms:UpdateKeyDescription",
    "kms:RetireKeyVersion",
};
static_assert(kActionNames.back() == "kms:RetireKeyVersion",
              "kActionNames out of step with Action");

}  // namespace

std::string_view ActionName(Action action) {
  const auto i = static_cast<size_t>(action);
  return i < kActionNames.size() ? kActionNames[i] : std::string_view("kms:?");
}

std::optional<Action> ActionFromName(std::string_view name) {
  for (size_t i = 0; i < kActionNames.size(); ++i) {
    if (kActionNames[i] == name) return static_cast<Action>(i);
  }
  return std::nullopt;
}

std::optional<Action> ActionFromNameIgnoreCase(std::string_view name) {
  for (size_t i = 0; i < kActionNames.size(); ++i) {
    if (policy_internal::EqualsIgnoreAsciiCase(kActionNames[i], name))
      return static_cast<Action>(i);
  }
  return std::nullopt;
}

ActionSet ExpandActionPattern(std::string_view pattern) {
  ActionSet set = 0;
  for (size_t i = 0; i < kActionNames.size(); ++i) {
    if (GlobMatch(pattern, kActionNames[i])) set |= ActionSet{1} << i;
  }
  return set;
}

}  // namespace kmsfs::keyd
