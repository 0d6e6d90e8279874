// Op: the closed set of keyd operations and their wire names (AWS KMS names where one exists).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace kmsfs::ipc {

// Adding an operation: append here, to kOps in operation.cc and to docs/protocol.md. Values are
// not on the wire (names are), so reordering is harmless but pointless.
enum class Op : uint8_t {
  // Keys and aliases.
  kCreateKey,
  kDescribeKey,
  kListKeys,
  kCreateAlias,
  kUpdateAlias,
  kDeleteAlias,
  kListAliases,
  kEnableKey,
  kDisableKey,
  kScheduleKeyDeletion,
  kCancelKeyDeletion,
  // Rotation.
  kRotateKeyOnDemand,
  kEnableKeyRotation,
  kDisableKeyRotation,
  kGetKeyRotationStatus,
  kListKeyRotations,
  // Envelope encryption (the data plane the filesystem uses).
  kGenerateDataKey,
  kGenerateDataKeyWithoutPlaintext,
  kEncrypt,
  kDecrypt,
  kReEncrypt,
  // Policies.
  kPutKeyPolicy,
  kGetKeyPolicy,
  // kmsfs extensions (no AWS equivalent).
  kListAudit,
  kVerifyAudit,
  kGetAuditCheckpoint,
  kExportAudit,
  kPruneAudit,
  kTestAccess,
  kBackup,
  kPing,
  kStatus,
  // Key version lifecycle (kmsfs extensions, appended: docs/lifecycle.md).
  kRetireKeyVersion,
  kCancelKeyVersionRetirement,
  kListKeyVersions,
};

// "GenerateDataKey" for Op::kGenerateDataKey. Never empty for a valid enumerator.
std::string_view OpName(Op op);
// Exact, case-sensitive match of a wire name; nullopt for anything else.
std::optional<Op> OpFromName(std::string_view name);
// Every operation once, in declaration order (for tests and `kmsctl --help`).
std::span<const Op> AllOps();

}  // namespace kmsfs::ipc
