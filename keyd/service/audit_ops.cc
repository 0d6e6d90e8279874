// KmsService: the audit trail operations (ListAudit, VerifyAudit, GetAuditCheckpoint, ExportAudit,
// PruneAudit) and the policy simulator (TestAccess). See README.md, "Audit operations".
#include <cctype>
#include <cstdint>
#include <ctime>
#include <limits>
#include <string>

#include "common/ipc/errors.h"
#include "keyd/audit/audit_reader.h"
#include "keyd/audit/record_codec.h"
#include "keyd/service/service_impl.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

constexpr uid_t kRootUid = 0;
constexpr int64_t kMaxUid = 0xFFFFFFFEll;  // (uid_t)-1 is "no user"
constexpr size_t kMaxFilterText = 4096;

// "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5Z" or "2024-05-01T14:00:00+02:00" (RFC 3339,
// fraction up to µs) -> µs since the epoch. The trail's own FormatTime output parses, too.
bool ParseRfc3339(const std::string& text, int64_t* out_us) {
  if (ParseTime(text, out_us)) return true;
  auto digits = [&](size_t pos, size_t n, int* v) {
    if (pos + n > text.size()) return false;
    *v = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
      *v = *v * 10 + (text[i] - '0');
    }
    return true;
  };
  int year, mon, day, hour, min, sec;
  if (text.size() < 20 || !digits(0, 4, &year) || text[4] != '-' || !digits(5, 2, &mon) ||
      text[7] != '-' || !digits(8, 2, &day) || (text[10] != 'T' && text[10] != 't') ||
      !digits(11, 2, &hour) || text[13] != ':' || !digits(14, 2, &min) || text[16] != ':' ||
      !digits(17, 2, &sec)) {
    return false;
  }
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) return false;
  size_t pos = 19;
  int64_t frac_us = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int64_t scale = 100000;
    const size_t start = pos;
    while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
      frac_us += (text[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start || pos - start > 9) return false;
  }
  int64_t offset_s = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int oh, om;
    if (!digits(pos + 1, 2, &oh) || pos + 3 >= text.size() || text[pos + 3] != ':' ||
        !digits(pos + 4, 2, &om) || oh > 23 || om > 59) {
      return false;
    }
    offset_s = (oh * 3600 + om * 60) * (text[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return false;
  }
  if (pos != text.size()) return false;
  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  const int64_t secs = static_cast<int64_t>(::timegm(&tm)) - offset_s;
  *out_us = secs * 1'000'000 + frac_us;
  return true;
}

Result<std::optional<int64_t>> OptTime(const ParamReader& params, std::string_view name) {
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> text, params.OptString(name, 1, 64));
  if (!text) return std::optional<int64_t>();
  int64_t us = 0;
  if (!ParseRfc3339(*text, &us)) {
    return ValidationError(std::string(name) +
                           " must be an RFC 3339 time, e.g. 2024-05-01T12:00:00Z");
  }
  return std::optional<int64_t>(us);
}

json CheckpointJson(const Checkpoint& c) {
  return json{
      {"Sequence", c.sequence}, {"Hash", DigestHex(c.hash)}, {"Time", FormatTime(c.time_us)}};
}

// An audit-trail error as the client should see it. The trail's messages name keyd's own files
// and sequence numbers, never key material or volume paths, so they may be shown.
Error TrailError(const Error& e, std::string_view what) {
  switch (e.code()) {
    case Code::kInvalidArgument:
      return ValidationError(e.message());
    case Code::kAlreadyExists:
      return ipc::NamedError("AlreadyExistsException", e.message() + "; choose a new file name");
    case Code::kFailedPrecondition:
    case Code::kNotFound:
      return ipc::NamedError("KMSInvalidStateException", e.message());
    default:
      return ipc::NamedError("KMSInternalException", std::string(what) + ": " + e.message());
  }
}

}  // namespace

Result<AuditReader*> KmsService::Impl::AuditAccess(const CallerContext& caller, AuditEvent& ev) {
  if (options_.audit_reader == nullptr) {
    return ipc::NamedError("UnsupportedOperationException",
                           ev.record.operation +
                               " needs the hash-chained audit trail, which this keyd was started "
                               "without");
  }
  // Why root only: the trail names every user's files and keys. A later issue may add an
  // audit-reader group (README.md).
  if (caller.Effective().uid != kRootUid) {
    ev.record.decision = "Deny";
    return ipc::NamedError("AccessDeniedException",
                           ev.record.operation +
                               " is allowed only to uid 0: the audit trail names every user's "
                               "keys and files; run it as root");
  }
  ev.record.decision = "Allow";
  return options_.audit_reader;
}

OpResult KmsService::Impl::ListAudit(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params,
                         ParamReader::Open(p, {"StartTime", "EndTime", "KeyId", "Uid", "PathPrefix",
                                               "Operation", "Outcome", "Limit", "After"}));
  KMSFS_ASSIGN_OR_RETURN(AuditReader * reader, AuditAccess(caller, ev));
  AuditFilter f;
  KMSFS_ASSIGN_OR_RETURN(f.from_time_us, OptTime(params, "StartTime"));
  KMSFS_ASSIGN_OR_RETURN(f.to_time_us, OptTime(params, "EndTime"));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> key_ref,
                         params.OptString("KeyId", 1, kMaxFilterText));
  if (key_ref) {
    // An alias or ARN is resolved to the key id records carry; a plain id is taken as is, so a
    // destroyed key's records can still be listed.
    if (key_ref->rfind("alias/", 0) == 0 || key_ref->rfind("arn:", 0) == 0) {
      AuditRecord scratch;
      KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadKey(*key_ref, "KeyId", scratch));
      f.key_id = key.key_id;
    } else {
      f.key_id = *key_ref;
    }
  }
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> uid, params.OptInt("Uid", 0, kMaxUid));
  if (uid) f.uid = static_cast<uint32_t>(*uid);
  KMSFS_ASSIGN_OR_RETURN(f.path_prefix, params.OptString("PathPrefix", 1, kMaxFilterText));
  KMSFS_ASSIGN_OR_RETURN(f.operation, params.OptString("Operation", 1, 128));
  KMSFS_ASSIGN_OR_RETURN(f.outcome, params.OptString("Outcome", 1, 128));
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> limit, params.OptInt("Limit", 1, 10000));
  f.limit = static_cast<size_t>(limit.value_or(100));
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> after,
                         params.OptInt("After", 0, std::numeric_limits<int64_t>::max()));
  f.after_sequence = static_cast<uint64_t>(after.value_or(0));

  auto page = reader->List(f);
  if (!page.ok()) return TrailError(page.error(), "cannot list the audit trail");
  auto head = reader->Head();
  if (!head.ok()) return TrailError(head.error(), "cannot read the audit trail's head");
  OpOutput out;
  json records = json::array();
  for (const TrailRecord& r : page->records) {
    json j = json::parse(r.json, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      return ipc::NamedError("KMSInternalException", "an audit record does not parse");
    }
    records.push_back(std::move(j));
  }
  out.result["Records"] = std::move(records);
  out.result["NextSequence"] = page->next_after;
  out.result["Truncated"] = page->more;
  out.result["HeadSequence"] = head->sequence;
  return out;
}

OpResult KmsService::Impl::VerifyAudit(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"Checkpoint"}));
  KMSFS_ASSIGN_OR_RETURN(AuditReader * reader, AuditAccess(caller, ev));
  std::optional<Checkpoint> against;
  if (params.Has("Checkpoint")) {
    const json& c = p.at("Checkpoint");
    if (!c.is_object()) {
      return ValidationError("Checkpoint must be an object {\"Sequence\",\"Hash\",\"Time\"}");
    }
    auto decoded = DecodeCheckpoint(c.dump());
    if (!decoded.ok()) {
      return ValidationError(
          "Checkpoint must be {\"Sequence\": N, \"Hash\": \"<64 hex>\", "
          "\"Time\": \"<RFC 3339>\"} (" +
          decoded.error().message() + ")");
    }
    against = *decoded;
  }
  auto report = reader->VerifyChain(against);
  if (!report.ok()) return TrailError(report.error(), "cannot read the audit trail");
  OpOutput out;
  out.result["Ok"] = report->ok;
  out.result["First"] = report->first;
  out.result["Last"] = report->last;
  out.result["Anchor"] = report->anchor ? json(*report->anchor) : json(nullptr);
  out.result["CheckpointsMatched"] = report->checkpoints_matched;
  out.result["BadSequence"] = report->ok ? json(nullptr) : json(report->bad_sequence);
  out.result["Message"] = report->message;
  return out;
}

OpResult KmsService::Impl::GetAuditCheckpoint(const json& p, const CallerContext& caller,
                                              AuditEvent& ev) {
  KMSFS_RETURN_IF_ERROR(ParamReader::Open(p, {}).status());
  KMSFS_ASSIGN_OR_RETURN(AuditReader * reader, AuditAccess(caller, ev));
  auto c = reader->MakeCheckpoint();
  if (!c.ok()) return TrailError(c.error(), "cannot store a checkpoint");
  OpOutput out;
  out.result = CheckpointJson(*c);
  return out;
}

OpResult KmsService::Impl::ExportAudit(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"From", "To", "Path"}));
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> from, params.OptInt("From", 0, kMax));
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> to, params.OptInt("To", 0, kMax));
  KMSFS_ASSIGN_OR_RETURN(std::string path, params.String("Path", 2, 4096));
  if (path[0] != '/' || path.find('\0') != std::string::npos) {
    return ValidationError("Path must be an absolute file name (keyd writes it, not the client)");
  }
  ev.record.detail = "export " + std::to_string(from.value_or(0)) + ".." +
                     std::to_string(to.value_or(0)) + " to " + path.substr(0, 1024);
  KMSFS_ASSIGN_OR_RETURN(AuditReader * reader, AuditAccess(caller, ev));
  auto c = reader->Export(static_cast<uint64_t>(from.value_or(0)),
                          static_cast<uint64_t>(to.value_or(0)), path);
  if (!c.ok()) return TrailError(c.error(), "cannot export the audit trail");
  OpOutput out;
  out.result["Path"] = path;
  out.result["Checkpoint"] = CheckpointJson(*c);
  return out;
}

OpResult KmsService::Impl::PruneAudit(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params, ParamReader::Open(p, {"UpTo"}));
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> up_to,
                         params.OptInt("UpTo", 1, std::numeric_limits<int64_t>::max()));
  if (!up_to) return ValidationError("UpTo is required: the last sequence number to delete");
  ev.record.detail = "prune up to " + std::to_string(*up_to);
  KMSFS_ASSIGN_OR_RETURN(AuditReader * reader, AuditAccess(caller, ev));
  Status s = reader->Prune(static_cast<uint64_t>(*up_to));
  if (!s.ok()) return TrailError(s.error(), "cannot prune the audit trail");
  OpOutput out;
  out.result["UpTo"] = *up_to;
  return out;
}

OpResult KmsService::Impl::TestAccess(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params,
                         ParamReader::Open(p, {"KeyId", "Action", "Uid", "Gid", "Path",
                                               "Executable", "Unit", "EncryptionContext"}));
  KMSFS_ASSIGN_OR_RETURN(std::string action_name, params.String("Action", 1, 128));
  std::optional<Action> action = ActionFromName(action_name);
  if (!action) action = ActionFromNameIgnoreCase(action_name);
  if (!action) {
    return ValidationError("Action must be a kms: action of docs/policy.md, e.g. kms:Decrypt");
  }
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> uid, params.OptInt("Uid", 0, kMaxUid));
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> gid, params.OptInt("Gid", 0, kMaxUid));
  if (uid && !gid) {
    return ValidationError("Gid is required with Uid (the simulated caller's primary group)");
  }
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> path, params.OptString("Path", 1, 4096));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> exe, params.OptString("Executable", 1, 4096));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> unit, params.OptString("Unit", 1, 256));
  KMSFS_ASSIGN_OR_RETURN(format::EncryptionContext context, params.Context("EncryptionContext"));

  // Why GetKeyPolicy: the simulator reveals what the policy says about anyone, which is exactly
  // what reading the policy reveals — no more.
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key,
                         LoadAndAuthorize(params, Action::kGetKeyPolicy, caller, ev));
  auto policy = policies_.Get(key.key_id, key.policy);
  if (!policy.ok()) {
    return ipc::NamedError("KMSInternalException", "the stored policy of key " + key.key_id +
                                                       " cannot be read by this keyd (logged)");
  }
  const Principal& me = caller.Effective();
  AuthzRequest r;
  r.action = *action;
  r.uid = uid ? static_cast<uint32_t>(*uid) : static_cast<uint32_t>(me.uid);
  r.gid = uid ? static_cast<uint32_t>(*gid)
              : (gid ? static_cast<uint32_t>(*gid) : static_cast<uint32_t>(me.gid));
  r.executable = exe;
  r.unit = unit;
  r.path = path;
  // A path only ever reaches keyd through a trusted forwarder (the filesystem), so a simulated
  // request with a path is a forwarded one.
  r.forwarded = path.has_value();
  r.encryption_context = context;
  auto vol = context.find(format::kContextVolume);
  if (vol != context.end()) r.volume = vol->second;
  const Decision d = Evaluate(*policy, r, *resolver_);

  OpOutput out;
  out.result["KeyId"] = key.key_id;
  out.result["Action"] = std::string(ActionName(*action));
  out.result["Decision"] = d.allowed() ? "Allow" : "Deny";
  out.result["Explicit"] = d.is_explicit;
  out.result["Sid"] = d.sid;
  out.result["StatementIndex"] = d.statement_index;
  out.result["Reason"] = d.reason;  // the caller's own simulated path at most
  return out;
}

}  // namespace kmsfs::keyd
