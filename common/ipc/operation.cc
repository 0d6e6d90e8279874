#include "common/ipc/operation.h"

#include <array>
#include <utility>

namespace kmsfs::ipc {
namespace {

struct OpEntry {
  Op op;
  std::string_view name;
};

// One table drives both directions so a name cannot be added to one and forgotten in the other.
constexpr std::array kOps = {
    OpEntry{Op::kCreateKey, "CreateKey"},
    OpEntry{Op::kDescribeKey, "DescribeKey"},
    OpEntry{Op::kListKeys, "ListKeys"},
    OpEntry{Op::kCreateAlias, "CreateAlias"},
    OpEntry{Op::kUpdateAlias, "UpdateAlias"},
    OpEntry{Op::kDeleteAlias, "DeleteAlias"},
    OpEntry{Op::kListAliases, "ListAliases"},
    OpEntry{Op::kEnableKey, "EnableKey"},
    OpEntry{Op::kDisableKey, "DisableKey"},
    OpEntry{Op::kScheduleKeyDeletion, "ScheduleKeyDeletion"},
    OpEntry{Op::kCancelKeyDeletion, "CancelKeyDeletion"},
    OpEntry{Op::kRotateKeyOnDemand, "RotateKeyOnDemand"},
    OpEntry{Op::kEnableKeyRotation, "EnableKeyRotation"},
    OpEntry{Op::kDisableKeyRotation, "DisableKeyRotation"},
    OpEntry{Op::kGetKeyRotationStatus, "GetKeyRotationStatus"},
    OpEntry{Op::kListKeyRotations, "ListKeyRotations"},
    OpEntry{Op::kGenerateDataKey, "GenerateDataKey"},
    OpEntry{Op::kGenerateDataKeyWithoutPlaintext, "GenerateDataKeyWithoutPlaintext"},
    OpEntry{Op::kEncrypt, "Encrypt"},
    OpEntry{Op::kDecrypt, "Decrypt"},
    OpEntry{Op::kReEncrypt, "ReEncrypt"},
    OpEntry{Op::kPutKeyPolicy, "PutKeyPolicy"},
    OpEntry{Op::kGetKeyPolicy, "GetKeyPolicy"},
    OpEntry{Op::kListAudit, "ListAudit"},
    OpEntry{Op::kVerifyAudit, "VerifyAudit"},
    OpEntry{Op::kGetAuditCheckpoint, "GetAuditCheckpoint"},
    OpEntry{Op::kExportAudit, "ExportAudit"},
    OpEntry{Op::kPruneAudit, "PruneAudit"},
    OpEntry{Op::kTestAccess, "TestAccess"},
    OpEntry{Op::kBackup, "Backup"},
    OpEntry{Op::kPing, "Ping"},
    OpEntry{Op::kStatus, "Status"},
    OpEntry{Op::kRetireKeyVersion, "RetireKeyVersion"},
    OpEntry{Op::kCancelKeyVersionRetirement, "CancelKeyVersionRetirement"},
    OpEntry{Op::kListKeyVersions, "ListKeyVersions"},
};

constexpr bool TableIsInEnumOrder() {
  for (size_t i = 0; i < kOps.size(); ++i) {
    if (static_cast<size_t>(kOps[i].op) != i) return false;
  }
  return static_cast<size_t>(Op::kListKeyVersions) + 1 == kOps.size();
}
// OpName indexes the table by enum value; this keeps that O(1) lookup honest.
static_assert(TableIsInEnumOrder(), "kOps must list every Op once, in declaration order");

constexpr std::array<Op, kOps.size()> MakeAllOps() {
  std::array<Op, kOps.size()> all{};
  for (size_t i = 0; i < kOps.size(); ++i) all[i] = kOps[i].op;
  return all;
}
constexpr std::array<Op, kOps.size()> kAllOps = MakeAllOps();

}  // namespace

std::string_view OpName(Op op) {
  const auto i = static_cast<size_t>(op);
  return i < kOps.size() ? kOps[i].name : std::string_view("UnknownOperation");
}

std::optional<Op> OpFromName(std::string_view name) {
  for (const auto& e : kOps) {
    if (e.name == name) return e.op;
  }
  return std::nullopt;
}

std::span<const Op> AllOps() { return kAllOps; }

}  // namespace kmsfs::ipc
