// KmsService: keyd's KMS operations (AWS KMS semantics) over the key store, policies and audit.
//
// Transport-agnostic: the server hands it an operation name, the request's Params and the
// CallerContext it established from SO_PEERCRED; no sockets here. The operations, their fields,
// errors and authorization rules are specified in keyd/service/README.md.
//
// Invariants it keeps (DESIGN.md):
// - every per-key operation is decided by the key's policy for CallerContext::Effective();
//   CreateKey and Backup are for uid 0 only;
// - every key use (GenerateDataKey*, Encrypt, Decrypt, ReEncrypt) and every administrative change
//   writes one audit record — successes, denials and failures — and a key or plaintext is
//   returned only after AuditSink::Append returned OK (fail closed: otherwise the plaintext is
//   wiped and the reply is KMSInternalException "audit trail unavailable ...");
// - administrative changes are audited inside the change's own LMDB transaction when the sink is
//   a TransactionalAuditSink (else right after the change; see README.md);
// - plaintext lives in crypto::SecretBytes until the very end, where it is base64-encoded into
//   ServiceReply::result["Plaintext"].
//
// NOTE for the server: a reply's `result` may hold a plaintext data key (base64 strings under
// "Plaintext"). Wipe it after sending — ipc::WipeJsonStrings(reply.result) and crypto::Wipe on
// the serialized frame — and never log a result.
//
// Threading: Handle and RunScheduledWork are thread-safe (keyd's worker pool calls Handle from
// several threads at once). Collaborators must be thread-safe and outlive the service.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/status.h"
#include "keyd/audit/audit_reader.h"
#include "keyd/audit/audit_sink.h"
#include "keyd/policy/name_resolver.h"
#include "keyd/rotation/schedule.h"
#include "keyd/service/kms_service_api.h"
#include "keyd/store/key_store.h"

namespace kmsfs::keyd {

class KmsService final : public KmsHandler {
 public:
  // Scheduling ranges (ScheduleOptions: pending window 7..30 days, rotation 90..2560 days,
  // default 365, and the TEST-ONLY rotation_day_seconds) plus the service's own knobs.
  struct Options : ScheduleOptions {
    size_t policy_cache_capacity = 4096;         // compiled policies kept (see PolicyCache)
    size_t max_scheduled_actions_per_run = 100;  // rotations + destructions per RunScheduledWork
    std::string version;                         // reported by Ping/Status; default: build's
    // The trail behind ListAudit, VerifyAudit, GetAuditCheckpoint, ExportAudit and PruneAudit
    // (normally the AuditTrail that is also the sink). Not owned; must outlive the service.
    // nullptr: those operations are UnsupportedOperationException.
    AuditReader* audit_reader = nullptr;
  };

  // `clock` gives unix seconds; give the store the same clock (KeyStore::Options::clock), since
  // the store stamps versions and checks deletion dates with its own. kInvalidArgument for
  // inconsistent Options. Nothing is owned: store, audit and resolver must outlive the service.
  static Result<std::unique_ptr<KmsService>> Create(KeyStore* store, AuditSink* audit,
                                                    const NameResolver* resolver,
                                                    std::function<int64_t()> clock,
                                                    Options options);

  // One operation. Never throws; an unexpected failure is KMSInternalException (logged).
  ServiceReply Handle(std::string_view op, const nlohmann::json& params,
                      const CallerContext& caller) override;
  // The same, but an operation whose one audit record the sink commits later (AuditTrail's
  // group commit) returns before it is durable; `done` gets the reply once it is (on the
  // committing thread; a key only after its record is durable, as with Handle). `done` must not
  // use the service.
  void HandleAsync(std::string_view op, const nlohmann::json& params, const CallerContext& caller,
                   std::function<void(ServiceReply)> done) override;

  // What a scheduler run did.
  struct ScheduledWorkReport {
    std::vector<std::string> rotated;    // key ids that gained an AUTOMATIC version
    std::vector<std::string> destroyed;  // key ids whose material was destroyed
    std::vector<std::string> failed;     // "KEYID: message" for actions that failed (retried)
    std::vector<std::string> destroyed_versions;  // "KEYID/N": retired versions destroyed
  };
  // Rotates Enabled keys whose NextRotationDate <= now (AUTOMATIC version, made primary, next
  // date = now + period) and destroys PendingDeletion keys whose DeletionDate <= now (all
  // material deleted, aliases removed, a Destroyed tombstone kept: crypto-shredding). Each
  // action is audited in its own transaction; an action whose audit record cannot be written is
  // not performed (and is retried by the next run). `now` should be the clock's current value.
  ScheduledWorkReport RunScheduledWork(int64_t now);

  ~KmsService() override;
  KmsService(const KmsService&) = delete;
  KmsService& operator=(const KmsService&) = delete;

  class Impl;  // keyd/service/service_impl.h

 private:
  explicit KmsService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The key ARN this keyd reports (KeyMetadata.Arn, ListKeys' KeyArn): "arn:kmsfs:kms:local::key/ID",
// the shape of an AWS key ARN with partition "kmsfs", region "local" and no account. Wherever a
// KeyId is accepted, this ARN (and "arn:kmsfs:kms:local::alias/NAME") is accepted too.
std::string KeyArn(std::string_view key_id);
std::string AliasArn(std::string_view alias_name);

}  // namespace kmsfs::keyd
