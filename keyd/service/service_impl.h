// KmsService::Impl: the service's internals, shared by its .cc files (not part of its API).
//
// Request flow (service_impl.cc, Handle): op name → OpSpec → the operation's method, which reads
// its Params (ParamReader), resolves the key, authorizes (key policy via PolicyCache), checks the
// key's state and calls KeyStore; it fills the AuditEvent as it learns things (key id, version,
// decision, Sid). Handle then writes the audit record(s) — unless the change already wrote its
// record inside its own transaction — and only if that succeeded does it base64-encode a
// plaintext into the reply. Errors travel as kmsfs::Error, named with ipc::NamedError when the
// code alone is ambiguous; ReplyForError turns them into AWS error names.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/crypto/secret.h"
#include "common/format/encryption_context.h"
#include "keyd/audit/transactional_audit_sink.h"
#include "keyd/policy/policy.h"
#include "keyd/service/kms_service.h"
#include "keyd/service/params.h"
#include "keyd/service/policy_cache.h"

namespace kmsfs::keyd {

// What one request contributes to the audit trail.
struct AuditEvent {
  enum class Mode {
    kNever,     // ListKeys, ListAliases, Ping, Status
    kOnDenial,  // read-only per-key operations: audited only when access is denied
    kAlways,    // key use and administrative changes: every outcome
  };
  Mode mode = Mode::kNever;
  AuditRecord record;                    // outcome is filled in at the end
  std::optional<AuditRecord> secondary;  // ReEncrypt: the destination key's record
  bool recorded_in_txn = false;          // the success record was written in the change's txn
  bool txn_audit_failed = false;         // AppendInTxn failed, so the change was aborted
  bool change_applied = false;           // a change committed (for the audit-failure message)
};

// A successful operation's output. A plaintext stays in locked memory until the audit record is
// durable; only then does Handle base64-encode it into result["Plaintext"].
struct OpOutput {
  nlohmann::json result = nlohmann::json::object();
  std::optional<crypto::SecretBytes> plaintext;
};
using OpResult = Result<OpOutput>;

class KmsService::Impl {
 public:
  using json = nlohmann::json;
  using OpFn = OpResult (Impl::*)(const json&, const CallerContext&, AuditEvent&);

  Impl(KeyStore* store, AuditSink* audit, const NameResolver* resolver,
       std::function<int64_t()> clock, Options options);

  ServiceReply Handle(std::string_view op, const json& params, const CallerContext& caller);
  void HandleAsync(std::string_view op, const json& params, const CallerContext& caller,
                   std::function<void(ServiceReply)> done);
  ScheduledWorkReport RunScheduledWork(int64_t now);

  // ---- operations (key_ops.cc: keys, aliases, rotation, policy; crypto_ops.cc: data plane;
  // service_impl.cc: Ping, Status, Backup) ----
  OpResult CreateKey(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult DescribeKey(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult ListKeys(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult CreateAlias(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult UpdateAlias(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult DeleteAlias(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult ListAliases(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult EnableKey(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult DisableKey(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult ScheduleKeyDeletion(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult CancelKeyDeletion(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult RotateKeyOnDemand(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult EnableKeyRotation(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult DisableKeyRotation(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult GetKeyRotationStatus(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult ListKeyRotations(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult GenerateDataKey(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult GenerateDataKeyWithoutPlaintext(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult Encrypt(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult Decrypt(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult ReEncrypt(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult PutKeyPolicy(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult GetKeyPolicy(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult Backup(const json& p, const CallerContext& c, AuditEvent& ev);
  // audit_ops.cc: the audit trail (uid 0 only) and the policy simulator.
  OpResult ListAudit(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult VerifyAudit(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult GetAuditCheckpoint(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult ExportAudit(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult PruneAudit(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult TestAccess(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult Ping(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult KeydStatus(const json& p, const CallerContext& c, AuditEvent& ev);  // op "Status"
  // version_ops.cc: the key-version lifecycle (docs/lifecycle.md).
  OpResult RetireKeyVersion(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult CancelKeyVersionRetirement(const json& p, const CallerContext& c, AuditEvent& ev);
  OpResult ListKeyVersions(const json& p, const CallerContext& c, AuditEvent& ev);
  // The scheduler's part: destroys up to `budget` Retired versions whose DestructionDate passed,
  // each audited ("DestroyKeyVersion") in its own transaction.
  void DestroyDueVersions(int64_t now, size_t budget, ScheduledWorkReport& report);

 private:
  // ---- shared helpers (service_impl.cc) ----
  // Resolves a KeyId parameter (key id, alias/NAME, or their ARN) to the key's record. Records the
  // requested name in the audit event first, then the resolved id. NotFoundException /
  // ValidationException naming `field`.
  Result<KeyRecord> LoadKey(std::string_view key_ref, std::string_view field, AuditRecord& rec);
  // Evaluates the key's policy for the caller; fills rec.decision/sid (and detail on Deny).
  // AccessDeniedException when not allowed; KMSInternalException if the stored policy is unusable.
  Status Authorize(const KeyRecord& key, Action action, const CallerContext& caller,
                   const format::EncryptionContext* context, AuditRecord& rec);
  // Inside a write transaction or after a second read: re-authorizes only if the policy text
  // differs from the one `authorized` was decided on.
  Status Reauthorize(const KeyRecord& current, const KeyRecord& authorized, Action action,
                     const CallerContext& caller, const format::EncryptionContext* context,
                     AuditRecord& rec);
  AuthzRequest BuildAuthzRequest(Action action, const CallerContext& caller,
                                 const format::EncryptionContext* context) const;
  // The TxnHook that writes ev.record (outcome Success) inside the change's transaction; empty
  // when the sink is not transactional.
  KeyStore::TxnHook AuditHook(AuditEvent& ev);
  // Appends the request's record(s) unless already written; false if the trail failed.
  bool FinishAudit(AuditEvent& ev, std::string_view outcome, std::string_view error_message);
  // Handle and HandleAsync: runs the operation into `p`; a reply when there is nothing left to
  // do (an unknown operation), else what remains is the audit record and ReplyAfterAudit.
  struct Pending;
  std::optional<ServiceReply> Run(std::string_view op, const json& params,
                                  const CallerContext& caller, Pending& p);
  // What remains of `p` on this thread: its audit record(s), if needed, then the reply.
  ServiceReply FinishNow(Pending& p);
  // The principal of scheduler actions: keyd itself.
  Principal SelfPrincipal() const;
  OpResult GenerateDataKeyCommon(const json& p, const CallerContext& c, AuditEvent& ev,
                                 bool with_plaintext);
  // UpdateKey with authorization re-checked inside the transaction and the audit hook attached.
  Result<KeyRecord> UpdateKeyAudited(const KeyRecord& authorized, Action action,
                                     const CallerContext& caller, AuditEvent& ev,
                                     const std::function<Status(KeyRecord&)>& mutate);
  // The "KeyId" parameter's key, authorized for `action` (no encryption context).
  Result<KeyRecord> LoadAndAuthorize(const ParamReader& params, Action action,
                                     const CallerContext& caller, AuditEvent& ev);
  // {"KeyId"} → authorize → UpdateKeyAudited(mutate) → {}: Enable/DisableKey and friends.
  OpResult SimpleKeyChange(const json& p, const CallerContext& c, AuditEvent& ev, Action action,
                           const std::function<Status(KeyRecord&)>& mutate);
  // The material of a key version (primary if nullopt), errors named for the client:
  // KMSInvalidStateException for a retired/destroyed version, InvalidCiphertextException for a
  // version that never existed, KMSInternalException (logged) for material that fails to unseal.
  Result<KeyMaterial> MaterialFor(const std::string& key_id, std::optional<uint32_t> version);
  int64_t Now() const { return clock_(); }
  // The required "KeyVersion" parameter (1..2^32-1).
  Result<uint32_t> VersionParam(const ParamReader& params) const;
  // Options::audit_reader for a uid-0 caller (fills the audit decision);
  // UnsupportedOperationException without a reader, AccessDeniedException for anyone else.
  Result<AuditReader*> AuditAccess(const CallerContext& caller, AuditEvent& ev);

  KeyStore* const store_;
  AuditSink* const audit_;
  TransactionalAuditSink* const txn_audit_;  // audit_ if it supports AppendInTxn, else null
  const NameResolver* const resolver_;
  const std::function<int64_t()> clock_;
  const Options options_;
  const std::chrono::steady_clock::time_point started_;
  const int64_t start_time_;
  PolicyCache policies_;
};

// Shared by the .cc files of this module.
// The AWS-shaped reply for an error (and a log line for unexpected ones).
ServiceReply ReplyForError(const Error& e);
// "2024-05-01T12:00:00Z".
std::string FormatUtc(int64_t unix_seconds);
// KeyState preconditions, with messages that say what to do. RequireUsable: Enabled
// (DisabledException / KMSInvalidStateException otherwise); RequireNotDeleting: not
// PendingDeletion or Destroyed (KMSInvalidStateException).
Status RequireUsable(const KeyRecord& key);
Status RequireNotDeleting(const KeyRecord& key);
// KeyMetadata of AWS DescribeKey/CreateKey.
nlohmann::json KeyMetadataJson(const KeyRecord& key);

}  // namespace kmsfs::keyd
