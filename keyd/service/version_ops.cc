// KmsService: the key-version lifecycle (kmsfs extensions, docs/lifecycle.md): RetireKeyVersion,
// CancelKeyVersionRetirement, ListKeyVersions, and the scheduler's destruction of retired
// versions whose waiting period passed.
//
// Division of labour with the filesystem: keyd cannot know which files still use a version (it
// never sees cipher directories). `kmsfs` checks its volume first (files wrapped under the
// version → refused unless --force) and then calls RetireKeyVersion; keyd's part is to make the
// version unusable at once, audit every refused use, and destroy its material after the window.
#include <limits>
#include <utility>

#include "common/ipc/errors.h"
#include "common/log/log.h"
#include "keyd/service/params.h"
#include "keyd/service/service_impl.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

constexpr size_t kMaxKeyRefLen = 2048;
constexpr int64_t kMaxVersion = 0xffffffffLL;

std::shared_ptr<spdlog::logger> Log() {
  static const std::shared_ptr<spdlog::logger> kLogger = log::Get("keyd.service");
  return kLogger;
}

json VersionJson(const KeyVersion& v, uint32_t primary) {
  json j = {{"KeyVersion", v.version},
            {"KeyVersionState", std::string(VersionStateName(v.state))},
            {"CreationDate", v.creation_date},
            {"RotationType", std::string(RotationTypeName(v.rotation_type))},
            {"Primary", v.version == primary}};
  if (v.destruction_date) j["DestructionDate"] = *v.destruction_date;
  return j;
}

// The store's kFailedPrecondition (wrong version state, primary, key deleting) as the AWS name
// for "the state forbids it"; its message already says which state.
Error StateError(const Error& e, const std::string& what_to_do) {
  if (e.code() != Code::kFailedPrecondition) return e;
  return ipc::NamedError("KMSInvalidStateException", e.message() + "; " + what_to_do);
}

}  // namespace

Result<uint32_t> KmsService::Impl::VersionParam(const ParamReader& params) const {
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> v, params.OptInt("KeyVersion", 1, kMaxVersion));
  if (!v) return ValidationError("KeyVersion is required: the version number, 1 to 4294967295");
  return static_cast<uint32_t>(*v);
}

OpResult KmsService::Impl::RetireKeyVersion(const json& p, const CallerContext& caller,
                                            AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params,
                         ParamReader::Open(p, {"KeyId", "KeyVersion", "PendingWindowInDays"}));
  KMSFS_ASSIGN_OR_RETURN(uint32_t version, VersionParam(params));
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> requested,
                         params.OptInt("PendingWindowInDays", -std::numeric_limits<int64_t>::max(),
                                       std::numeric_limits<int64_t>::max()));
  KMSFS_ASSIGN_OR_RETURN(uint32_t window, ChoosePendingWindow(requested, options_));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kRetireKeyVersion, caller, ev));
  ev.record.key_version = version;
  const int64_t destruction = DeletionDate(Now(), window, options_);
  ev.record.detail = "version " + std::to_string(version) +
                     " retired: it no longer encrypts or decrypts; its material will be "
                     "destroyed at " +
                     FormatUtc(destruction);
  auto retired = store_->ScheduleVersionDestruction(
      key.key_id, version, destruction,
      [&](const KeyRecord& k, const KeyVersion&) -> Status {
        return Reauthorize(k, key, Action::kRetireKeyVersion, caller, nullptr, ev.record);
      },
      AuditHook(ev));
  if (!retired.ok()) {
    if (retired.error().code() == Code::kNotFound) {
      return ipc::NamedError("NotFoundException", "key " + key.key_id + " has no version " +
                                                      std::to_string(version) +
                                                      " (kmsctl list-key-versions)");
    }
    return StateError(retired.error(),
                      "see the key's versions with kmsctl list-key-versions; a Retired version's "
                      "retirement can be cancelled with CancelKeyVersionRetirement");
  }
  Log()->warn("key {} version {} retired by uid {}; material destroyed at {}", key.key_id, version,
              static_cast<uint32_t>(caller.Effective().uid), FormatUtc(destruction));
  OpOutput out;
  out.result["KeyId"] = key.key_id;
  out.result["KeyVersion"] = version;
  out.result["KeyVersionState"] = std::string(VersionStateName(retired->state));
  out.result["DestructionDate"] = destruction;
  out.result["PendingWindowInDays"] = window;
  return out;
}

OpResult KmsService::Impl::CancelKeyVersionRetirement(const json& p, const CallerContext& caller,
                                                      AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId", "KeyVersion"}));
  KMSFS_ASSIGN_OR_RETURN(uint32_t version, VersionParam(params));
  // The same permission as retiring: whoever may take a version out of service may put it back.
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kRetireKeyVersion, caller, ev));
  ev.record.key_version = version;
  ev.record.detail = "version " + std::to_string(version) + " serves requests again";
  auto restored = store_->CancelVersionRetirement(
      key.key_id, version,
      [&](const KeyRecord& k, const KeyVersion&) -> Status {
        KMSFS_RETURN_IF_ERROR(
            Reauthorize(k, key, Action::kRetireKeyVersion, caller, nullptr, ev.record));
        return RequireNotDeleting(k);
      },
      AuditHook(ev));
  if (!restored.ok()) {
    if (restored.error().code() == Code::kNotFound) {
      return ipc::NamedError("NotFoundException",
                             "key " + key.key_id + " has no version " + std::to_string(version));
    }
    return StateError(restored.error(),
                      "only a Retired version whose material has not been destroyed yet can be "
                      "restored");
  }
  OpOutput out;
  out.result["KeyId"] = key.key_id;
  out.result["KeyVersion"] = version;
  out.result["KeyVersionState"] = std::string(VersionStateName(restored->state));
  return out;
}

OpResult KmsService::Impl::ListKeyVersions(const json& p, const CallerContext& caller,
                                           AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId"}));
  // What ListKeyRotations reveals, plus the initial version and destruction dates.
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kListKeyRotations, caller, ev));
  KMSFS_ASSIGN_OR_RETURN(std::vector<KeyVersion> versions, store_->ListVersions(key.key_id));
  OpOutput out;
  json list = json::array();
  for (const KeyVersion& v : versions) list.push_back(VersionJson(v, key.primary_version));
  out.result["KeyId"] = key.key_id;
  out.result["KeyState"] = std::string(KeyStateName(key.key_state));
  out.result["PrimaryVersion"] = key.primary_version;
  out.result["Versions"] = std::move(list);
  return out;
}

void KmsService::Impl::DestroyDueVersions(int64_t now, size_t budget, ScheduledWorkReport& report) {
  auto due = store_->VersionsDueForDestruction(now);
  if (!due.ok()) {
    Log()->error("scheduled work: cannot list retired versions: {}", due.error().ToString());
    report.failed.push_back("store: " + due.error().message());
    return;
  }
  for (const KeyVersion& v : *due) {
    if (budget == 0) break;  // the rest waits for the next run
    --budget;
    AuditEvent ev;
    ev.mode = AuditEvent::Mode::kAlways;
    ev.record.operation = "DestroyKeyVersion";
    ev.record.principal = SelfPrincipal();
    ev.record.key_id = v.key_id;
    ev.record.key_version = v.version;
    ev.record.detail = "retired version " + std::to_string(v.version) +
                       ": key material destroyed after its waiting period; data encrypted under "
                       "this version can no longer be decrypted";
    // DestroyVersion re-checks inside its transaction that the version is still Retired and its
    // date has passed (a concurrent cancel wins).
    Status s = store_->DestroyVersion(v.key_id, v.version, AuditHook(ev));
    if (!s.ok()) ev.recorded_in_txn = false;
    if (!s.ok() && s.code() == Code::kFailedPrecondition) continue;  // cancelled meanwhile
    const ServiceReply err = s.ok() ? ServiceReply{} : ReplyForError(s.error());
    const bool audited =
        FinishAudit(ev, s.ok() ? std::string_view("Success") : err.error_name, err.error_message);
    const std::string name = v.key_id + "/" + std::to_string(v.version);
    if (!s.ok() || !audited || ev.txn_audit_failed) {
      report.failed.push_back(name + ": DestroyKeyVersion " +
                              (s.ok() ? std::string("audit trail unavailable") : s.ToString()));
      continue;
    }
    report.destroyed_versions.push_back(name);
    Log()->warn("key {} version {} destroyed: its retirement window passed", v.key_id, v.version);
  }
}

}  // namespace kmsfs::keyd
