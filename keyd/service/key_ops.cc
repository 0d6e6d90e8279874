// KmsService: key, alias, rotation and policy operations (the control plane).
#include <cstdlib>
#include <limits>
#include <utility>

#include "common/crypto/hash.h"
#include "common/ipc/errors.h"
#include "keyd/service/params.h"
#include "keyd/service/service_impl.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

constexpr size_t kMaxKeyRefLen = 2048;
constexpr size_t kMaxAliasLen = 256;
constexpr size_t kMaxDescriptionLen = 8192;
constexpr int64_t kAnyInt = std::numeric_limits<int64_t>::max();

Error Unsupported(const std::string& message) {
  return ipc::NamedError("UnsupportedOperationException", message);
}

// An optional enum-like string parameter that this keyd supports with exactly one value.
Status RequireOnly(const ParamReader& params, std::string_view name,
                   std::initializer_list<std::string_view> accepted, const std::string& why) {
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> v, params.OptString(name, 1, 64));
  if (!v) return Status::Ok();
  for (std::string_view a : accepted) {
    if (*v == a) return Status::Ok();
  }
  return Unsupported(std::string(name) + ": " + why);
}

Status CheckPolicyName(const ParamReader& params) {
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> name, params.OptString("PolicyName", 1, 128));
  if (name && *name != "default") {
    return ValidationError("PolicyName must be \"default\": a key has exactly one key policy");
  }
  return Status::Ok();
}

// Limit parameter with AWS's range and default.
Result<size_t> LimitParam(const ParamReader& params, int64_t max, int64_t def) {
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> limit, params.OptInt("Limit", 1, max));
  return static_cast<size_t>(limit.value_or(def));
}

bool IsAliasRef(std::string_view ref) {
  constexpr std::string_view kAliasArn = "arn:kmsfs:kms:local::alias/";
  return ref.substr(0, 6) == "alias/" || ref.substr(0, kAliasArn.size()) == kAliasArn;
}

std::string PolicyDigest(std::string_view text) { return HexEncode(crypto::Sha256(AsBytes(text))); }

}  // namespace

// ---- shared shapes
// -------------------------------------------------------------------------------

Result<KeyRecord> KmsService::Impl::LoadAndAuthorize(const ParamReader& params, Action action,
                                                     const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(std::string ref, params.String("KeyId", 1, kMaxKeyRefLen));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadKey(ref, "KeyId", ev.record));
  KMSFS_RETURN_IF_ERROR(Authorize(key, action, caller, nullptr, ev.record));
  return key;
}

Result<KeyRecord> KmsService::Impl::UpdateKeyAudited(
    const KeyRecord& authorized, Action action, const CallerContext& caller, AuditEvent& ev,
    const std::function<Status(KeyRecord&)>& mutate) {
  return store_->UpdateKey(
      authorized.key_id,
      [&](KeyRecord& k) -> Status {
        // The record read inside the write transaction is the one we change: re-decide if its
        // policy moved since the authorization above (a concurrent PutKeyPolicy).
        KMSFS_RETURN_IF_ERROR(Reauthorize(k, authorized, action, caller, nullptr, ev.record));
        return mutate(k);
      },
      AuditHook(ev));
}

OpResult KmsService::Impl::SimpleKeyChange(const json& p, const CallerContext& caller,
                                           AuditEvent& ev, Action action,
                                           const std::function<Status(KeyRecord&)>& mutate) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId"}));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadAndAuthorize(params, action, caller, ev));
  KMSFS_RETURN_IF_ERROR(UpdateKeyAudited(key, action, caller, ev, mutate).status());
  return OpOutput{};
}

// ---- keys
// ----------------------------------------------------------------------------------------

OpResult KmsService::Impl::CreateKey(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(
      ParamReader params,
      ParamReader::Open(
          p, {"Description", "Tags", "Policy", "BypassPolicyLockoutSafetyCheck", "KeySpec",
              "CustomerMasterKeySpec", "KeyUsage", "Origin", "MultiRegion"}));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> description,
                         params.OptString("Description", 0, kMaxDescriptionLen));
  KMSFS_ASSIGN_OR_RETURN(std::vector<KeyTag> tags, params.Tags("Tags"));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> policy_text,
                         params.OptString("Policy", 1, kMaxPolicyBytes));
  KMSFS_ASSIGN_OR_RETURN(std::optional<bool> bypass,
                         params.OptBool("BypassPolicyLockoutSafetyCheck"));
  const std::string symmetric_only = "this keyd creates only SYMMETRIC_DEFAULT (AES-256) keys";
  KMSFS_RETURN_IF_ERROR(RequireOnly(params, "KeySpec", {"SYMMETRIC_DEFAULT"}, symmetric_only));
  KMSFS_RETURN_IF_ERROR(
      RequireOnly(params, "CustomerMasterKeySpec", {"SYMMETRIC_DEFAULT"}, symmetric_only));
  KMSFS_RETURN_IF_ERROR(RequireOnly(params, "KeyUsage", {"ENCRYPT_DECRYPT"},
                                    "this keyd creates only ENCRYPT_DECRYPT keys"));
  KMSFS_RETURN_IF_ERROR(RequireOnly(params, "Origin", {"AWS_KMS", "KMSFS"},
                                    "keyd generates key material itself; imported (EXTERNAL) and "
                                    "external key stores are not supported"));
  KMSFS_ASSIGN_OR_RETURN(std::optional<bool> multi_region, params.OptBool("MultiRegion"));
  if (multi_region.value_or(false)) return Unsupported("MultiRegion keys are not supported yet");

  // Not a per-key decision (there is no key yet): only root creates keys, for now.
  if (caller.Effective().uid != 0) {
    ev.record.decision = "Deny";
    ev.record.detail = "CreateKey is allowed to uid 0 only";
    return ipc::NamedError("AccessDeniedException",
                           "uid " + std::to_string(caller.Effective().uid) +
                               " is not authorized to perform kms:CreateKey: on this keyd only "
                               "root (uid 0) creates keys; ask an administrator");
  }
  ev.record.decision = "Allow";

  std::string text = policy_text ? std::move(*policy_text) : DefaultKeyPolicy();
  if (policy_text) {
    auto compiled = CompiledPolicy::Parse(text);
    if (!compiled.ok()) {
      return ValidationError("Policy is not a valid key policy: " + compiled.error().message());
    }
    if (!bypass.value_or(false)) {
      Status s = CheckLockout(*compiled, BuildAuthzRequest(Action::kPutKeyPolicy, caller, nullptr),
                              *resolver_);
      if (!s.ok()) {
        return ValidationError(s.error().message() +
                               "; to create the key anyway set BypassPolicyLockoutSafetyCheck");
      }
    }
  }
  ev.record.detail = "policy sha256 " + PolicyDigest(text);
  // The store picks the key id inside its transaction, so the record cannot be written there:
  // Handle appends it right after the commit (see README.md, "Audit").
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         store_->CreateKey(description.value_or(""), std::move(tags), text));
  ev.record.key_id = key.key_id;
  ev.record.key_version = key.primary_version;
  OpOutput out;
  out.result["KeyMetadata"] = KeyMetadataJson(key);
  return out;
}

OpResult KmsService::Impl::DescribeKey(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId"}));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadAndAuthorize(params, Action::kDescribeKey, caller, ev));
  OpOutput out;
  out.result["KeyMetadata"] = KeyMetadataJson(key);
  return out;
}

OpResult KmsService::Impl::ListKeys(const json& p, const CallerContext&, AuditEvent&) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"Limit", "Marker"}));
  KMSFS_ASSIGN_OR_RETURN(size_t limit, LimitParam(params, 1000, 100));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> marker, params.OptString("Marker", 1, 1024));
  KMSFS_ASSIGN_OR_RETURN(Page<KeyRecord> page, store_->ListKeys(limit, marker.value_or("")));
  OpOutput out;
  json keys = json::array();
  for (const KeyRecord& k : page.items) {
    if (k.key_state == KeyState::kDestroyed) continue;  // tombstones: DescribeKey still shows them
    keys.push_back({{"KeyId", k.key_id}, {"KeyArn", KeyArn(k.key_id)}});
  }
  out.result["Keys"] = std::move(keys);
  out.result["Truncated"] = !page.next_marker.empty();
  if (!page.next_marker.empty()) out.result["NextMarker"] = page.next_marker;
  return out;
}

OpResult KmsService::Impl::EnableKey(const json& p, const CallerContext& c, AuditEvent& ev) {
  return SimpleKeyChange(p, c, ev, Action::kEnableKey, [](KeyRecord& k) -> Status {
    KMSFS_RETURN_IF_ERROR(RequireNotDeleting(k));
    k.key_state = KeyState::kEnabled;
    return Status::Ok();
  });
}

OpResult KmsService::Impl::DisableKey(const json& p, const CallerContext& c, AuditEvent& ev) {
  return SimpleKeyChange(p, c, ev, Action::kDisableKey, [](KeyRecord& k) -> Status {
    KMSFS_RETURN_IF_ERROR(RequireNotDeleting(k));
    k.key_state = KeyState::kDisabled;
    return Status::Ok();
  });
}

OpResult KmsService::Impl::ScheduleKeyDeletion(const json& p, const CallerContext& caller,
                                               AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params,
                         ParamReader::Open(p, {"KeyId", "PendingWindowInDays"}));
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> requested,
                         params.OptInt("PendingWindowInDays", -kAnyInt, kAnyInt));
  KMSFS_ASSIGN_OR_RETURN(uint32_t window, ChoosePendingWindow(requested, options_));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kScheduleKeyDeletion, caller, ev));
  const int64_t deletion = DeletionDate(Now(), window, options_);
  ev.record.detail = "key material will be destroyed at " + FormatUtc(deletion);
  KMSFS_ASSIGN_OR_RETURN(
      KeyRecord updated,
      UpdateKeyAudited(key, Action::kScheduleKeyDeletion, caller, ev, [&](KeyRecord& k) -> Status {
        if (k.key_state == KeyState::kPendingDeletion) {
          return ipc::NamedError("KMSInvalidStateException",
                                 "key " + k.key_id + " is already pending deletion (at " +
                                     FormatUtc(k.deletion_date.value_or(0)) +
                                     "); cancel it first (CancelKeyDeletion) to pick another date");
        }
        k.key_state = KeyState::kPendingDeletion;
        k.deletion_date = deletion;
        return Status::Ok();
      }));
  OpOutput out;
  out.result["KeyId"] = updated.key_id;
  out.result["DeletionDate"] = deletion;
  out.result["KeyState"] = std::string(KeyStateName(updated.key_state));
  out.result["PendingWindowInDays"] = window;
  return out;
}

OpResult KmsService::Impl::CancelKeyDeletion(const json& p, const CallerContext& caller,
                                             AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId"}));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kCancelKeyDeletion, caller, ev));
  ev.record.detail = "key is Disabled; enable it (EnableKey) to use it again";
  KMSFS_RETURN_IF_ERROR(
      UpdateKeyAudited(key, Action::kCancelKeyDeletion, caller, ev, [](KeyRecord& k) -> Status {
        if (k.key_state != KeyState::kPendingDeletion) {
          return ipc::NamedError("KMSInvalidStateException",
                                 "key " + k.key_id + " is not pending deletion (it is " +
                                     std::string(KeyStateName(k.key_state)) +
                                     "); there is nothing to cancel");
        }
        // As AWS KMS: a cancelled deletion leaves the key Disabled, so re-enabling is a
        // deliberate second step.
        k.key_state = KeyState::kDisabled;
        k.deletion_date.reset();
        return Status::Ok();
      }).status());
  OpOutput out;
  out.result["KeyId"] = key.key_id;
  return out;
}

// ---- rotation
// ------------------------------------------------------------------------------------

OpResult KmsService::Impl::RotateKeyOnDemand(const json& p, const CallerContext& caller,
                                             AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId"}));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kRotateKeyOnDemand, caller, ev));
  KMSFS_RETURN_IF_ERROR(RequireUsable(key));
  auto update = [&](KeyRecord& k) -> Status {
    KMSFS_RETURN_IF_ERROR(
        Reauthorize(k, key, Action::kRotateKeyOnDemand, caller, nullptr, ev.record));
    KMSFS_RETURN_IF_ERROR(RequireUsable(k));
    // AddVersion has already made the new version primary here.
    ev.record.key_version = k.primary_version;
    ev.record.detail =
        "version " + std::to_string(k.primary_version) + " (ON_DEMAND) is now primary";
    return Status::Ok();
  };
  const Status added =
      store_->AddVersion(key.key_id, RotationType::kOnDemand, update, AuditHook(ev)).status();
  if (!added.ok()) return added.error();
  OpOutput out;
  out.result["KeyId"] = key.key_id;
  return out;
}

OpResult KmsService::Impl::EnableKeyRotation(const json& p, const CallerContext& caller,
                                             AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params,
                         ParamReader::Open(p, {"KeyId", "RotationPeriodInDays"}));
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> requested,
                         params.OptInt("RotationPeriodInDays", -kAnyInt, kAnyInt));
  KMSFS_ASSIGN_OR_RETURN(uint32_t period, ChooseRotationPeriod(requested, options_));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kEnableKeyRotation, caller, ev));
  KMSFS_RETURN_IF_ERROR(RequireUsable(key));
  const int64_t now = Now();
  auto mutate = [&](KeyRecord& k) -> Status {
    KMSFS_RETURN_IF_ERROR(RequireUsable(k));
    // Re-enabling with the same period keeps the schedule; a new period restarts it.
    if (!(k.rotation_enabled && k.rotation_period_in_days == period)) {
      k.rotation_enabled = true;
      k.rotation_period_in_days = period;
      k.next_rotation_date = NextRotationDate(now, period, options_);
    }
    ev.record.detail = "rotation every " + std::to_string(period) + " days; next at " +
                       FormatUtc(*k.next_rotation_date);
    return Status::Ok();
  };
  const Status updated =
      UpdateKeyAudited(key, Action::kEnableKeyRotation, caller, ev, mutate).status();
  if (!updated.ok()) return updated.error();
  return OpOutput{};
}

OpResult KmsService::Impl::DisableKeyRotation(const json& p, const CallerContext& c,
                                              AuditEvent& ev) {
  return SimpleKeyChange(p, c, ev, Action::kDisableKeyRotation, [](KeyRecord& k) -> Status {
    KMSFS_RETURN_IF_ERROR(RequireUsable(k));
    k.rotation_enabled = false;
    k.next_rotation_date.reset();
    return Status::Ok();
  });
}

OpResult KmsService::Impl::GetKeyRotationStatus(const json& p, const CallerContext& caller,
                                                AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId"}));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kGetKeyRotationStatus, caller, ev));
  OpOutput out;
  out.result["KeyId"] = key.key_id;
  out.result["KeyRotationEnabled"] = key.rotation_enabled;
  if (key.rotation_enabled) {
    out.result["RotationPeriodInDays"] = key.rotation_period_in_days;
    if (key.next_rotation_date) out.result["NextRotationDate"] = *key.next_rotation_date;
  }
  return out;
}

OpResult KmsService::Impl::ListKeyRotations(const json& p, const CallerContext& caller,
                                            AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId", "Limit", "Marker"}));
  KMSFS_ASSIGN_OR_RETURN(size_t limit, LimitParam(params, 1000, 100));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> marker, params.OptString("Marker", 1, 10));
  uint32_t after = 0;
  if (marker) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(marker->c_str(), &end, 10);
    if (end != marker->c_str() + marker->size() || v == 0 ||
        v > std::numeric_limits<uint32_t>::max()) {
      return ValidationError("Marker must be a NextMarker returned by ListKeyRotations");
    }
    after = static_cast<uint32_t>(v);
  }
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kListKeyRotations, caller, ev));
  KMSFS_ASSIGN_OR_RETURN(std::vector<KeyVersion> versions, store_->ListVersions(key.key_id));
  OpOutput out;
  json rotations = json::array();
  std::string next;
  for (const KeyVersion& v : versions) {
    // As AWS: the initial material is not a rotation.
    if (v.rotation_type == RotationType::kInitial || v.version <= after) continue;
    if (rotations.size() == limit) {
      next = std::to_string(rotations.back()["KeyVersion"].get<uint32_t>());
      break;
    }
    rotations.push_back({{"KeyId", key.key_id},
                         {"RotationDate", v.creation_date},
                         {"RotationType", std::string(RotationTypeName(v.rotation_type))},
                         {"KeyVersion", v.version},
                         {"KeyVersionState", std::string(VersionStateName(v.state))}});
  }
  out.result["Rotations"] = std::move(rotations);
  out.result["Truncated"] = !next.empty();
  if (!next.empty()) out.result["NextMarker"] = next;
  return out;
}

// ---- aliases
// -------------------------------------------------------------------------------------

OpResult KmsService::Impl::CreateAlias(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"AliasName", "TargetKeyId"}));
  KMSFS_ASSIGN_OR_RETURN(std::string alias, params.String("AliasName", 1, kMaxAliasLen));
  KMSFS_RETURN_IF_ERROR(ValidateAliasName(alias));
  KMSFS_ASSIGN_OR_RETURN(std::string target, params.String("TargetKeyId", 1, kMaxKeyRefLen));
  if (IsAliasRef(target)) {
    return ValidationError("TargetKeyId must be a key id or key ARN, not an alias");
  }
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadKey(target, "TargetKeyId", ev.record));
  KMSFS_RETURN_IF_ERROR(Authorize(key, Action::kCreateAlias, caller, nullptr, ev.record));
  ev.record.detail = alias + " -> " + key.key_id;
  auto created = store_->CreateAlias(alias, key.key_id, AuditHook(ev));
  if (!created.ok() && created.error().code() == Code::kAlreadyExists) {
    return ipc::NamedError("AlreadyExistsException",
                           "alias " + alias +
                               " already exists; choose another name, or point it elsewhere "
                               "with UpdateAlias");
  }
  KMSFS_RETURN_IF_ERROR(created.status());
  return OpOutput{};
}

OpResult KmsService::Impl::UpdateAlias(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"AliasName", "TargetKeyId"}));
  KMSFS_ASSIGN_OR_RETURN(std::string alias, params.String("AliasName", 1, kMaxAliasLen));
  KMSFS_RETURN_IF_ERROR(ValidateAliasName(alias));
  KMSFS_ASSIGN_OR_RETURN(std::string target, params.String("TargetKeyId", 1, kMaxKeyRefLen));
  if (IsAliasRef(target)) {
    return ValidationError("TargetKeyId must be a key id or key ARN, not an alias");
  }
  // As AWS: the caller needs kms:UpdateAlias on both the current and the new target.
  KMSFS_ASSIGN_OR_RETURN(KeyRecord current, LoadKey(alias, "AliasName", ev.record));
  KMSFS_RETURN_IF_ERROR(Authorize(current, Action::kUpdateAlias, caller, nullptr, ev.record));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadKey(target, "TargetKeyId", ev.record));
  KMSFS_RETURN_IF_ERROR(Authorize(key, Action::kUpdateAlias, caller, nullptr, ev.record));
  ev.record.detail = alias + " moved from " + current.key_id + " to " + key.key_id;
  KMSFS_RETURN_IF_ERROR(store_->UpdateAlias(alias, key.key_id, AuditHook(ev)).status());
  return OpOutput{};
}

OpResult KmsService::Impl::DeleteAlias(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"AliasName"}));
  KMSFS_ASSIGN_OR_RETURN(std::string alias, params.String("AliasName", 1, kMaxAliasLen));
  KMSFS_RETURN_IF_ERROR(ValidateAliasName(alias));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadKey(alias, "AliasName", ev.record));
  KMSFS_RETURN_IF_ERROR(Authorize(key, Action::kDeleteAlias, caller, nullptr, ev.record));
  ev.record.detail = alias + " (pointed to " + key.key_id + ")";
  KMSFS_RETURN_IF_ERROR(store_->DeleteAlias(alias, AuditHook(ev)));
  return OpOutput{};
}

OpResult KmsService::Impl::ListAliases(const json& p, const CallerContext&, AuditEvent&) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId", "Limit", "Marker"}));
  KMSFS_ASSIGN_OR_RETURN(size_t limit, LimitParam(params, 100, 50));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> marker,
                         params.OptString("Marker", 1, kMaxAliasLen));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> ref,
                         params.OptString("KeyId", 1, kMaxKeyRefLen));
  std::optional<std::string> key_id;
  if (ref) {
    AuditRecord unused;
    KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadKey(*ref, "KeyId", unused));
    key_id = key.key_id;
  }
  auto page = store_->ListAliases(key_id, limit, marker.value_or(""));
  if (!page.ok() && page.error().code() == Code::kInvalidArgument && marker) {
    return ValidationError("Marker must be a NextMarker returned by ListAliases");
  }
  KMSFS_RETURN_IF_ERROR(page.status());
  OpOutput out;
  json aliases = json::array();
  for (const AliasRecord& a : page->items) {
    aliases.push_back({{"AliasName", a.alias_name},
                       {"AliasArn", AliasArn(a.alias_name)},
                       {"TargetKeyId", a.target_key_id},
                       {"CreationDate", a.creation_date},
                       {"LastUpdatedDate", a.last_updated_date}});
  }
  out.result["Aliases"] = std::move(aliases);
  out.result["Truncated"] = !page->next_marker.empty();
  if (!page->next_marker.empty()) out.result["NextMarker"] = page->next_marker;
  return out;
}

// ---- policies
// ------------------------------------------------------------------------------------

OpResult KmsService::Impl::PutKeyPolicy(const json& p, const CallerContext& caller,
                                        AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(
      ParamReader params,
      ParamReader::Open(p, {"KeyId", "PolicyName", "Policy", "BypassPolicyLockoutSafetyCheck"}));
  KMSFS_RETURN_IF_ERROR(CheckPolicyName(params));
  KMSFS_ASSIGN_OR_RETURN(std::string text, params.String("Policy", 1, kMaxPolicyBytes));
  KMSFS_ASSIGN_OR_RETURN(std::optional<bool> bypass,
                         params.OptBool("BypassPolicyLockoutSafetyCheck"));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kPutKeyPolicy, caller, ev));
  auto compiled = CompiledPolicy::Parse(text);
  if (!compiled.ok()) {
    return ValidationError("Policy is not a valid key policy: " + compiled.error().message());
  }
  if (!bypass.value_or(false)) {
    // Would the caller still be able to change the policy afterwards? (AWS's lockout check.)
    Status s = CheckLockout(*compiled, BuildAuthzRequest(Action::kPutKeyPolicy, caller, nullptr),
                            *resolver_);
    if (!s.ok()) {
      return ValidationError(s.error().message() +
                             "; to install it anyway set BypassPolicyLockoutSafetyCheck");
    }
  }
  ev.record.detail = "new policy sha256 " + PolicyDigest(text) +
                     (bypass.value_or(false) ? " (lockout safety check bypassed)" : "");
  KMSFS_RETURN_IF_ERROR(
      UpdateKeyAudited(key, Action::kPutKeyPolicy, caller, ev, [&](KeyRecord& k) -> Status {
        k.policy = text;
        return Status::Ok();
      }).status());
  policies_.Invalidate(key.key_id);  // frees the old entry; a stale hit is impossible anyway
  return OpOutput{};
}

OpResult KmsService::Impl::GetKeyPolicy(const json& p, const CallerContext& caller,
                                        AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"KeyId", "PolicyName"}));
  KMSFS_RETURN_IF_ERROR(CheckPolicyName(params));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kGetKeyPolicy, caller, ev));
  OpOutput out;
  out.result["Policy"] = key.policy.empty() ? DefaultKeyPolicy() : key.policy;
  out.result["PolicyName"] = "default";
  return out;
}

}  // namespace kmsfs::keyd
