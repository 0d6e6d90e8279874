// KmsService: construction, dispatch, authorization, audit, error replies, and the small
// non-key operations (Ping, Status, Backup).
#include "keyd/service/service_impl.h"

#include <unistd.h>

#include <ctime>
#include <new>
#include <utility>

#include "common/format/base64.h"
#include "common/ipc/errors.h"
#include "common/ipc/operation.h"
#include "common/log/log.h"
#include "keyd/service/params.h"

#ifndef KMSFS_VERSION
#define KMSFS_VERSION "unknown"
#endif

namespace kmsfs::keyd {
namespace {

using nlohmann::json;
using Mode = AuditEvent::Mode;

constexpr std::string_view kArnPrefix = "arn:kmsfs:kms:local::";
constexpr uid_t kRootUid = 0;
constexpr size_t kMaxDetail = 2048;
constexpr size_t kMaxKeyRef = 2048;

std::shared_ptr<spdlog::logger> Log() {
  static const std::shared_ptr<spdlog::logger> kLogger = log::Get("keyd.service");
  return kLogger;
}

// A client-supplied name (KeyId, AliasName) made safe and short for a message or audit record.
std::string Printable(std::string_view s, size_t max = 300) {
  std::string out;
  for (char c : s.substr(0, max)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > max) out += "...";
  return out;
}

struct OpSpec {
  ipc::Op op;
  Mode audit;
  bool change;  // an administrative change (for the audit-failure message)
  KmsService::Impl::OpFn fn;
};

using I = KmsService::Impl;
constexpr OpSpec kOps[] = {
    {ipc::Op::kCreateKey, Mode::kAlways, true, &I::CreateKey},
    {ipc::Op::kDescribeKey, Mode::kOnDenial, false, &I::DescribeKey},
    {ipc::Op::kListKeys, Mode::kNever, false, &I::ListKeys},
    {ipc::Op::kCreateAlias, Mode::kAlways, true, &I::CreateAlias},
    {ipc::Op::kUpdateAlias, Mode::kAlways, true, &I::UpdateAlias},
    {ipc::Op::kDeleteAlias, Mode::kAlways, true, &I::DeleteAlias},
    {ipc::Op::kListAliases, Mode::kNever, false, &I::ListAliases},
    {ipc::Op::kEnableKey, Mode::kAlways, true, &I::EnableKey},
    {ipc::Op::kDisableKey, Mode::kAlways, true, &I::DisableKey},
    {ipc::Op::kScheduleKeyDeletion, Mode::kAlways, true, &I::ScheduleKeyDeletion},
    {ipc::Op::kCancelKeyDeletion, Mode::kAlways, true, &I::CancelKeyDeletion},
    {ipc::Op::kRotateKeyOnDemand, Mode::kAlways, true, &I::RotateKeyOnDemand},
    {ipc::Op::kEnableKeyRotation, Mode::kAlways, true, &I::EnableKeyRotation},
    {ipc::Op::kDisableKeyRotation, Mode::kAlways, true, &I::DisableKeyRotation},
    {ipc::Op::kGetKeyRotationStatus, Mode::kOnDenial, false, &I::GetKeyRotationStatus},
    {ipc::Op::kListKeyRotations, Mode::kOnDenial, false, &I::ListKeyRotations},
    {ipc::Op::kGenerateDataKey, Mode::kAlways, false, &I::GenerateDataKey},
    {ipc::Op::kGenerateDataKeyWithoutPlaintext, Mode::kAlways, false,
     &I::GenerateDataKeyWithoutPlaintext},
    {ipc::Op::kEncrypt, Mode::kAlways, false, &I::Encrypt},
    {ipc::Op::kDecrypt, Mode::kAlways, false, &I::Decrypt},
    {ipc::Op::kReEncrypt, Mode::kAlways, false, &I::ReEncrypt},
    {ipc::Op::kPutKeyPolicy, Mode::kAlways, true, &I::PutKeyPolicy},
    {ipc::Op::kGetKeyPolicy, Mode::kOnDenial, false, &I::GetKeyPolicy},
    {ipc::Op::kListAudit, Mode::kOnDenial, false, &I::ListAudit},
    {ipc::Op::kVerifyAudit, Mode::kOnDenial, false, &I::VerifyAudit},
    {ipc::Op::kGetAuditCheckpoint, Mode::kOnDenial, false, &I::GetAuditCheckpoint},
    {ipc::Op::kExportAudit, Mode::kAlways, true, &I::ExportAudit},
    {ipc::Op::kPruneAudit, Mode::kAlways, true, &I::PruneAudit},
    {ipc::Op::kTestAccess, Mode::kOnDenial, false, &I::TestAccess},
    {ipc::Op::kBackup, Mode::kAlways, true, &I::Backup},
    {ipc::Op::kPing, Mode::kNever, false, &I::Ping},
    {ipc::Op::kStatus, Mode::kNever, false, &I::KeydStatus},
    {ipc::Op::kRetireKeyVersion, Mode::kAlways, true, &I::RetireKeyVersion},
    {ipc::Op::kCancelKeyVersionRetirement, Mode::kAlways, true, &I::CancelKeyVersionRetirement},
    {ipc::Op::kListKeyVersions, Mode::kOnDenial, false, &I::ListKeyVersions},
};

const OpSpec* FindOp(ipc::Op op) {
  for (const OpSpec& s : kOps) {
    if (s.op == op) return &s;
  }
  return nullptr;
}

void AppendDetail(std::string& detail, std::string_view more) {
  if (more.empty()) return;
  if (!detail.empty()) detail += "; ";
  detail += more;
  if (detail.size() > kMaxDetail) detail.resize(kMaxDetail);
}

}  // namespace

// ---- public surface
// ------------------------------------------------------------------------------

std::string KeyArn(std::string_view key_id) {
  return std::string(kArnPrefix) + "key/" + std::string(key_id);
}

std::string AliasArn(std::string_view alias_name) {
  return std::string(kArnPrefix) + std::string(alias_name);
}

Result<std::unique_ptr<KmsService>> KmsService::Create(KeyStore* store, AuditSink* audit,
                                                       const NameResolver* resolver,
                                                       std::function<int64_t()> clock,
                                                       Options options) {
  KMSFS_CHECK(store != nullptr && audit != nullptr && resolver != nullptr);
  KMSFS_RETURN_IF_ERROR(ValidateScheduleOptions(options));
  if (options.policy_cache_capacity == 0 || options.max_scheduled_actions_per_run == 0) {
    return Error(Code::kInvalidArgument,
                 "policy_cache_capacity and max_scheduled_actions_per_run must be at least 1");
  }
  if (!clock) clock = [] { return static_cast<int64_t>(::time(nullptr)); };
  if (options.version.empty()) options.version = KMSFS_VERSION;
  return std::unique_ptr<KmsService>(new KmsService(
      std::make_unique<Impl>(store, audit, resolver, std::move(clock), std::move(options))));
}

KmsService::KmsService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KmsService::~KmsService() = default;

ServiceReply KmsService::Handle(std::string_view op, const nlohmann::json& params,
                                const CallerContext& caller) {
  return impl_->Handle(op, params, caller);
}

void KmsService::HandleAsync(std::string_view op, const nlohmann::json& params,
                             const CallerContext& caller,
                             std::function<void(ServiceReply)> done) {
  impl_->HandleAsync(op, params, caller, std::move(done));
}

KmsService::ScheduledWorkReport KmsService::RunScheduledWork(int64_t now) {
  return impl_->RunScheduledWork(now);
}

// ---- Impl: dispatch and audit
// ----------------------------------------------------------------------

KmsService::Impl::Impl(KeyStore* store, AuditSink* audit, const NameResolver* resolver,
                       std::function<int64_t()> clock, Options options)
    : store_(store),
      audit_(audit),
      txn_audit_(dynamic_cast<TransactionalAuditSink*>(audit)),
      resolver_(resolver),
      clock_(std::move(clock)),
      options_(std::move(options)),
      started_(std::chrono::steady_clock::now()),
      start_time_(clock_()),
      policies_(options_.policy_cache_capacity) {}

// What an operation left to do once it has run: its audit record, and the reply that depends on
// the record's fate. Owns the operation's output (a plaintext stays in locked memory) until then.
struct KmsService::Impl::Pending {
  AuditEvent ev;
  OpResult out = Error(Code::kInternal, "not run");
  ServiceReply error_reply;  // when !out.ok()
  bool audit_needed = false;

  // The record's outcome and detail (CompleteRecord, FinishAudit).
  std::string_view outcome() const {
    return out.ok() ? std::string_view("Success") : std::string_view(error_reply.error_name);
  }
  std::string_view error_message() const {
    return out.ok() ? std::string_view() : std::string_view(error_reply.error_message);
  }
};

namespace {

// The reply once the audit record's fate is known (`audited`: durable, or none was needed).
// Uses nothing of the service: it may run on the audit trail's committer thread, after the
// service is gone.
ServiceReply ReplyAfterAudit(AuditEvent& ev, OpResult& out, ServiceReply& error_reply,
                             bool audited) {
  if (!audited || ev.txn_audit_failed) {
    // Fail closed. Returning destroys `out`: a plaintext in it is wiped by SecretBytes.
    std::string message = "audit trail unavailable: request denied (fail closed)";
    if (ev.change_applied && !ev.txn_audit_failed) {
      message += "; the change itself was applied before its audit record failed";
    }
    message += "; check keyd's log and the free space of its state directory";
    return ServiceReply::Error("KMSInternalException", std::move(message));
  }
  if (!out.ok()) return std::move(error_reply);

  ServiceReply reply;
  reply.result = std::move(out->result);
  if (out->plaintext) {
    // As late as possible: the key has been in locked memory until this line. The server wipes
    // the result's strings and the frame after sending (see kms_service.h).
    reply.result["Plaintext"] = format::Base64Encode(out->plaintext->span());
  }
  return reply;
}

// The outcome and detail of the record that goes to the sink (FinishAudit, HandleAsync).
void CompleteRecord(AuditRecord& r, const AuditEvent& ev, std::string_view outcome,
                    std::string_view error_message) {
  r.outcome = std::string(outcome);
  AppendDetail(r.detail, error_message);
  if (ev.txn_audit_failed) AppendDetail(r.detail, "audit append inside the change failed");
}

void LogAuditUnavailable(const AuditEvent& ev, const Status& s) {
  Log()->critical(
      "AUDIT TRAIL UNAVAILABLE: {} by uid {} on key {} denied (fail closed): {}",
      ev.record.operation, static_cast<uint32_t>(ev.record.principal.uid),
      ev.record.key_id.empty() ? "-" : ev.record.key_id,
      s.ok() ? std::string("append inside the change's transaction failed") : s.ToString());
}

}  // namespace

std::optional<ServiceReply> KmsService::Impl::Run(std::string_view op_name, const json& params,
                                                  const CallerContext& caller, Pending& p) {
  const std::optional<ipc::Op> op = ipc::OpFromName(op_name);
  if (!op) {
    return ServiceReply::Error("UnsupportedOperationException",
                               "unknown operation " + Printable(op_name, 64) +
                                   "; see docs/protocol.md for the operations keyd serves");
  }
  const OpSpec* spec = FindOp(*op);
  if (spec == nullptr) {
    return ServiceReply::Error("UnsupportedOperationException",
                               std::string(op_name) +
                                   " is not implemented by this keyd yet (it comes with the "
                                   "hash-chained audit trail); use a newer kmsfs-keyd");
  }

  AuditEvent& ev = p.ev;
  ev.mode = spec->audit;
  ev.record.operation = std::string(op_name);
  ev.record.principal = caller.Effective();
  if (caller.on_behalf) ev.record.forwarder = caller.peer;
  ev.record.path = caller.path;
  if (caller.forwarded_ignored) {
    ev.record.detail = "OnBehalfOf ignored: the peer is not a trusted forwarder";
  }

  OpResult& out = p.out;
  try {
    out = (this->*spec->fn)(params, caller, ev);
  } catch (const std::bad_alloc&) {
    out = ipc::NamedError("KMSInternalException", "keyd ran out of memory; retry later");
  } catch (const std::exception& e) {
    Log()->error("{} failed with an exception: {}", op_name, e.what());
    out = ipc::NamedError("KMSInternalException",
                          "internal error in keyd (logged); retry, and report it if it persists");
  }
  if (!out.ok()) ev.recorded_in_txn = false;  // its transaction did not commit
  ev.change_applied = out.ok() && spec->change;

  if (!out.ok()) p.error_reply = ReplyForError(out.error());
  const bool denied = !out.ok() && p.error_reply.error_name == "AccessDeniedException";
  p.audit_needed =
      ev.mode == Mode::kAlways || (ev.mode == Mode::kOnDenial && denied) || ev.txn_audit_failed;
  return std::nullopt;
}

ServiceReply KmsService::Impl::Handle(std::string_view op_name, const json& params,
                                      const CallerContext& caller) {
  Pending p;
  if (std::optional<ServiceReply> early = Run(op_name, params, caller, p)) return *early;
  return FinishNow(p);
}

ServiceReply KmsService::Impl::FinishNow(Pending& p) {
  const bool audited = !p.audit_needed || FinishAudit(p.ev, p.outcome(), p.error_message());
  return ReplyAfterAudit(p.ev, p.out, p.error_reply, audited);
}

void KmsService::Impl::HandleAsync(std::string_view op_name, const json& params,
                                   const CallerContext& caller,
                                   std::function<void(ServiceReply)> done) {
  auto p = std::make_shared<Pending>();
  if (std::optional<ServiceReply> early = Run(op_name, params, caller, *p)) {
    done(std::move(*early));
    return;
  }
  AuditEvent& ev = p->ev;
  // One record, not already in the change's transaction, to a sink that may commit it later:
  // the caller's thread goes on, and the reply is made when the record's fate is known.
  // Anything else (two records, a failed in-transaction append) takes the synchronous path.
  if (!p->audit_needed || ev.recorded_in_txn || ev.secondary || ev.txn_audit_failed) {
    done(FinishNow(*p));
    return;
  }
  AuditRecord record = ev.record;
  CompleteRecord(record, ev, p->outcome(), p->error_message());
  audit_->AppendAsync(std::move(record), [p, done = std::move(done)](Status s) {
    if (!s.ok()) LogAuditUnavailable(p->ev, s);
    ServiceReply reply;
    try {
      reply = ReplyAfterAudit(p->ev, p->out, p->error_reply, s.ok());
    } catch (...) {
      // Out of memory making the reply: the request is still answered (its connection would
      // otherwise wait forever), and the plaintext goes with `p`.
      reply = ServiceReply::Error("KMSInternalException", "keyd ran out of memory; retry later");
    }
    done(std::move(reply));
  });
}

bool KmsService::Impl::FinishAudit(AuditEvent& ev, std::string_view outcome,
                                   std::string_view error_message) {
  if (ev.recorded_in_txn) return true;
  CompleteRecord(ev.record, ev, outcome, error_message);
  Status s = audit_->Append(ev.record);
  if (s.ok() && ev.secondary) {
    CompleteRecord(*ev.secondary, ev, outcome, error_message);
    s = audit_->Append(*ev.secondary);
  }
  if (!s.ok() || ev.txn_audit_failed) LogAuditUnavailable(ev, s);
  return s.ok();
}

KeyStore::TxnHook KmsService::Impl::AuditHook(AuditEvent& ev) {
  if (txn_audit_ == nullptr) return {};
  return [this, &ev](WriteTxn& txn) -> Status {
    AuditRecord r = ev.record;
    r.outcome = "Success";
    Status s = txn_audit_->AppendInTxn(txn, std::move(r));
    if (!s.ok()) {
      ev.txn_audit_failed = true;
      return s;
    }
    ev.recorded_in_txn = true;
    return Status::Ok();
  };
}

Principal KmsService::Impl::SelfPrincipal() const {
  Principal p;
  p.uid = ::geteuid();
  p.gid = ::getegid();
  p.pid = ::getpid();
  p.unit = "kmsfs-keyd scheduler";
  return p;
}

// ---- Impl: keys and authorization
// ------------------------------------------------------------------

Result<KeyRecord> KmsService::Impl::LoadKey(std::string_view key_ref, std::string_view field,
                                            AuditRecord& rec) {
  rec.key_id = Printable(key_ref);
  std::string_view ref = key_ref;
  if (ref.substr(0, kArnPrefix.size()) == kArnPrefix) {
    ref.remove_prefix(kArnPrefix.size());
    if (ref.substr(0, 4) == "key/") {
      ref.remove_prefix(4);
    } else if (ref.substr(0, 6) != "alias/") {
      ref = {};
    }
  }
  const std::string shape = std::string(field) + " must be a key id, alias/NAME, or an ARN " +
                            std::string(kArnPrefix) + "key/ID or " + std::string(kArnPrefix) +
                            "alias/NAME";
  if (ref.empty() || ref.size() > kMaxKeyRef) return ValidationError(shape);
  auto key = store_->GetKey(ref);
  if (!key.ok()) {
    const Code code = key.error().code();
    if (code == Code::kInvalidArgument) return ValidationError(shape);
    if (code == Code::kNotFound) {
      const bool alias = ref.substr(0, 6) == "alias/";
      return ipc::NamedError("NotFoundException",
                             (alias ? "alias " : "key ") + Printable(ref) +
                                 " does not exist; check the " + std::string(field) +
                                 (alias ? " (kmsctl list-aliases)" : " (kmsctl list-keys)"));
    }
    return key.error();
  }
  rec.key_id = key->key_id;
  return key;
}

AuthzRequest KmsService::Impl::BuildAuthzRequest(Action action, const CallerContext& caller,
                                                 const format::EncryptionContext* context) const {
  const Principal& p = caller.Effective();
  AuthzRequest r;
  r.action = action;
  r.uid = static_cast<uint32_t>(p.uid);
  r.gid = static_cast<uint32_t>(p.gid);
  r.pid = static_cast<int32_t>(p.pid);
  if (!p.executable.empty()) r.executable = p.executable;
  if (!p.unit.empty()) r.unit = p.unit;
  if (!caller.path.empty()) r.path = caller.path;
  r.forwarded = caller.on_behalf.has_value();
  if (context != nullptr) {
    r.encryption_context = *context;
    auto it = context->find(format::kContextVolume);
    if (it != context->end()) r.volume = it->second;
  }
  return r;
}

Status KmsService::Impl::Authorize(const KeyRecord& key, Action action, const CallerContext& caller,
                                   const format::EncryptionContext* context, AuditRecord& rec) {
  auto policy = policies_.Get(key.key_id, key.policy);
  if (!policy.ok()) {
    // PutKeyPolicy validates what it stores, so this is a stored policy a newer or older parser
    // disagrees with, or damage. Deny (fail closed) and say so loudly.
    Log()->error("key {}: stored key policy does not parse: {}", key.key_id,
                 policy.error().message());
    rec.decision = "Deny";
    AppendDetail(rec.detail, "stored key policy does not parse");
    return ipc::NamedError("KMSInternalException",
                           "the stored policy of key " + key.key_id +
                               " cannot be read by this keyd (logged); nobody can use the key "
                               "until it is fixed");
  }
  const AuthzRequest request = BuildAuthzRequest(action, caller, context);
  const Decision d = Evaluate(*policy, request, *resolver_);
  rec.decision = d.allowed() ? "Allow" : "Deny";
  rec.sid = d.sid;
  if (d.allowed()) return Status::Ok();
  AppendDetail(rec.detail, d.reason);  // may name the path: fine for the audit trail only
  return ipc::NamedError(
      "AccessDeniedException",
      "uid " + std::to_string(request.uid) + " is not authorized to perform " +
          std::string(ActionName(action)) + " on key " + key.key_id +
          (d.is_explicit ? ": the key policy explicitly denies it"
                         : ": no statement of the key policy allows it") +
          "; ask the key's administrator to change the key policy (PutKeyPolicy)");
}

Status KmsService::Impl::Reauthorize(const KeyRecord& current, const KeyRecord& authorized,
                                     Action action, const CallerContext& caller,
                                     const format::EncryptionContext* context, AuditRecord& rec) {
  if (current.policy == authorized.policy) return Status::Ok();
  return Authorize(current, action, caller, context, rec);
}

// ---- Impl: Ping, Status, Backup
// ---------------------------------------------------------------------

OpResult KmsService::Impl::Ping(const json& p, const CallerContext&, AuditEvent&) {
  KMSFS_RETURN_IF_ERROR(ParamReader::Open(p, {}).status());
  OpOutput out;
  out.result["Version"] = options_.version;
  return out;
}

OpResult KmsService::Impl::KeydStatus(const json& p, const CallerContext&, AuditEvent&) {
  KMSFS_RETURN_IF_ERROR(ParamReader::Open(p, {}).status());
  size_t count = 0;
  std::string marker;
  do {
    KMSFS_ASSIGN_OR_RETURN(Page<KeyRecord> page, store_->ListKeys(1000, marker));
    for (const KeyRecord& k : page.items) count += k.key_state != KeyState::kDestroyed;
    marker = page.next_marker;
  } while (!marker.empty());
  const auto uptime = std::chrono::steady_clock::now() - started_;
  OpOutput out;
  out.result["Version"] = options_.version;
  out.result["KeyCount"] = count;
  out.result["StartTime"] = start_time_;
  out.result["UptimeSeconds"] = std::chrono::duration_cast<std::chrono::seconds>(uptime).count();
  out.result["AuditInTransaction"] = txn_audit_ != nullptr;
  out.result["PolicyCacheEntries"] = policies_.size();
  return out;
}

OpResult KmsService::Impl::Backup(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"Path"}));
  KMSFS_ASSIGN_OR_RETURN(std::string path, params.String("Path", 2, 4096));
  if (path[0] != '/' || path.find('\0') != std::string::npos) {
    return ValidationError("Path must be an absolute file name (keyd resolves it, not the client)");
  }
  ev.record.detail = "backup to " + Printable(path, 1024);
  if (caller.Effective().uid != kRootUid) {
    ev.record.decision = "Deny";
    return ipc::NamedError("AccessDeniedException",
                           "Backup is allowed only to uid 0: the copy holds every sealed key; "
                           "run it as root");
  }
  ev.record.decision = "Allow";
  // The trail's write-ahead file is not in the copy: drain it first, so that the backup holds
  // every record acknowledged before this request.
  Status s = audit_->Flush();
  if (!s.ok()) {
    Log()->error("Backup to {}: the audit trail could not be flushed: {}", path, s.ToString());
    return ipc::NamedError("KMSInternalException",
                           "audit trail unavailable, no backup written: " + s.error().message());
  }
  s = store_->Backup(path);
  if (!s.ok()) {
    if (s.code() == Code::kAlreadyExists) {
      return ipc::NamedError("AlreadyExistsException",
                             s.error().message() + "; choose a new file name");
    }
    Log()->error("Backup to {} failed: {}", path, s.ToString());
    return ipc::NamedError(
        "KMSInternalException",
        s.error().message() + "; check that the directory exists and keyd may write there");
  }
  OpOutput out;
  out.result["Path"] = path;
  return out;
}

// ---- shared free helpers
// -----------------------------------------------------------------------------

ServiceReply ReplyForError(const Error& e) {
  const std::string_view message = ipc::ErrorMessageOf(e);
  if (message.size() != e.message().size()) {  // named with ipc::NamedError
    return ServiceReply::Error(std::string(ipc::ErrorNameOf(e)), std::string(message));
  }
  switch (e.code()) {
    case Code::kNotFound:
      return ServiceReply::Error("NotFoundException", e.message());
    case Code::kAlreadyExists:
      return ServiceReply::Error("AlreadyExistsException", e.message());
    case Code::kInvalidArgument:
      return ServiceReply::Error("ValidationException", e.message());
    case Code::kPermissionDenied:
      return ServiceReply::Error("AccessDeniedException", e.message());
    case Code::kFailedPrecondition:  // the store's "the key's state forbids this"
    case Code::kKeyUnavailable:
      return ServiceReply::Error("KMSInvalidStateException", e.message());
    default:
      Log()->error("internal error: {}", e.ToString());
      return ServiceReply::Error(
          "KMSInternalException",
          "internal error in keyd (logged); retry, and report it if it persists");
  }
}

std::string FormatUtc(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  char buf[32];
  if (::gmtime_r(&t, &tm) == nullptr ||
      ::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(unix_seconds);
  }
  return buf;
}

Status RequireUsable(const KeyRecord& key) {
  switch (key.key_state) {
    case KeyState::kEnabled:
      return Status::Ok();
    case KeyState::kDisabled:
      return ipc::NamedError("DisabledException",
                             "key " + key.key_id + " is disabled; enable it (EnableKey) to use it");
    default:
      return RequireNotDeleting(key);
  }
}

Status RequireNotDeleting(const KeyRecord& key) {
  const std::string when = key.deletion_date ? FormatUtc(*key.deletion_date) : "?";
  if (key.key_state == KeyState::kPendingDeletion) {
    return ipc::NamedError("KMSInvalidStateException",
                           "key " + key.key_id +
                               " is pending deletion (its material will be "
                               "destroyed at " +
                               when +
                               "); cancel the deletion (CancelKeyDeletion) "
                               "and enable the key to use it again");
  }
  if (key.key_state == KeyState::kDestroyed) {
    return ipc::NamedError("KMSInvalidStateException",
                           "key " + key.key_id + " was destroyed at " + when +
                               "; its material is gone and nothing encrypted under it can be "
                               "decrypted any more");
  }
  return Status::Ok();
}

nlohmann::json KeyMetadataJson(const KeyRecord& k) {
  json m = json::object();
  m["KeyId"] = k.key_id;
  m["Arn"] = KeyArn(k.key_id);
  m["CreationDate"] = k.creation_date;
  m["Enabled"] = k.key_state == KeyState::kEnabled;
  m["Description"] = k.description;
  m["KeyUsage"] = k.key_usage;
  m["KeyState"] = std::string(KeyStateName(k.key_state));
  if (k.deletion_date) m["DeletionDate"] = *k.deletion_date;
  m["Origin"] = k.origin;
  m["KeyManager"] = "CUSTOMER";
  m["KeySpec"] = k.key_spec;
  m["CustomerMasterKeySpec"] = k.key_spec;
  m["EncryptionAlgorithms"] = json::array({"SYMMETRIC_DEFAULT"});
  m["MultiRegion"] = false;
  return m;
}

}  // namespace kmsfs::keyd
