#include "keyd/audit/simple_audit_sink.h"

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

constexpr char kRecordsDb[] = "audit";
constexpr char kMetaDb[] = "audit_meta";
constexpr char kNextSequenceKey[] = "next_sequence";
constexpr size_t kMaxRead = 1000;

std::string SequenceKey(uint64_t sequence) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, sequence);
  return std::string(buf, 16);
}

json PrincipalJson(const Principal& p) {
  json j = json::object();
  j["Uid"] = static_cast<uint32_t>(p.uid);
  j["Gid"] = static_cast<uint32_t>(p.gid);
  j["Pid"] = static_cast<int64_t>(p.pid);
  if (!p.executable.empty()) j["Executable"] = p.executable;
  if (!p.unit.empty()) j["Unit"] = p.unit;
  return j;
}

// Strict readers: a missing optional field is its default; a present field of the wrong type is
// corruption. Every accessor checks the type before reading, so nothing below throws on data.
Error Corrupt(const std::string& what) {
  return Error(Code::kCorrupt, "audit record: " + what + " is malformed");
}

Status ReadString(const json& j, const char* name, std::string* out) {
  auto it = j.find(name);
  if (it == j.end()) return Status::Ok();
  if (!it->is_string()) return Corrupt(name);
  *out = it->get<std::string>();
  return Status::Ok();
}

template <class T>
Status ReadUnsigned(const json& j, const char* name, T* out) {
  auto it = j.find(name);
  if (it == j.end()) return Status::Ok();
  if (!it->is_number_unsigned() || it->get<uint64_t>() > std::numeric_limits<T>::max()) {
    return Corrupt(name);
  }
  *out = static_cast<T>(it->get<uint64_t>());
  return Status::Ok();
}

Status ReadInt64(const json& j, const char* name, int64_t* out) {
  auto it = j.find(name);
  if (it == j.end()) return Status::Ok();
  if (!it->is_number_integer()) return Corrupt(name);
  *out = it->get<int64_t>();
  return Status::Ok();
}

Result<Principal> ReadPrincipal(const json& j) {
  if (!j.is_object()) return Corrupt("Principal");
  Principal p;
  uint32_t uid = 0, gid = 0;
  int64_t pid = 0;
  KMSFS_RETURN_IF_ERROR(ReadUnsigned(j, "Uid", &uid));
  KMSFS_RETURN_IF_ERROR(ReadUnsigned(j, "Gid", &gid));
  KMSFS_RETURN_IF_ERROR(ReadInt64(j, "Pid", &pid));
  p.uid = static_cast<uid_t>(uid);
  p.gid = static_cast<gid_t>(gid);
  p.pid = static_cast<pid_t>(pid);
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Executable", &p.executable));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Unit", &p.unit));
  return p;
}

Result<AuditRecord> DecodeUnguarded(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corrupt("document");
  AuditRecord r;
  KMSFS_RETURN_IF_ERROR(ReadUnsigned(j, "Sequence", &r.sequence));
  KMSFS_RETURN_IF_ERROR(ReadInt64(j, "Time", &r.time_us));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Operation", &r.operation));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "KeyId", &r.key_id));
  KMSFS_RETURN_IF_ERROR(ReadUnsigned(j, "KeyVersion", &r.key_version));
  if (auto it = j.find("Principal"); it != j.end()) {
    KMSFS_ASSIGN_OR_RETURN(r.principal, ReadPrincipal(*it));
  }
  if (auto it = j.find("Forwarder"); it != j.end()) {
    KMSFS_ASSIGN_OR_RETURN(Principal f, ReadPrincipal(*it));
    r.forwarder = std::move(f);
  }
  if (auto it = j.find("EncryptionContext"); it != j.end()) {
    if (!it->is_object()) return Corrupt("EncryptionContext");
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) return Corrupt("EncryptionContext");
      r.encryption_context[k] = v.get<std::string>();
    }
  }
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Path", &r.path));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Decision", &r.decision));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Sid", &r.sid));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Outcome", &r.outcome));
  KMSFS_RETURN_IF_ERROR(ReadString(j, "Detail", &r.detail));
  return r;
}

int64_t SystemClockUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<std::string> EncodeAuditRecord(const AuditRecord& r) {
  try {
    json j = json::object();
    j["Sequence"] = r.sequence;
    j["Time"] = r.time_us;
    j["Operation"] = r.operation;
    if (!r.key_id.empty()) j["KeyId"] = r.key_id;
    if (r.key_version != 0) j["KeyVersion"] = r.key_version;
    j["Principal"] = PrincipalJson(r.principal);
    if (r.forwarder) j["Forwarder"] = PrincipalJson(*r.forwarder);
    if (!r.encryption_context.empty()) j["EncryptionContext"] = r.encryption_context;
    if (!r.path.empty()) j["Path"] = r.path;
    if (!r.decision.empty()) j["Decision"] = r.decision;
    if (!r.sid.empty()) j["Sid"] = r.sid;
    j["Outcome"] = r.outcome;
    if (!r.detail.empty()) j["Detail"] = r.detail;
    // `replace`: a path that is not valid UTF-8 must not make the record unwritable (and with it
    // the request fail closed); U+FFFD is what the protocol already substitutes.
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (const std::exception& e) {
    return Error(Code::kInternal, std::string("cannot encode audit record: ") + e.what());
  }
}

Result<AuditRecord> DecodeAuditRecord(std::string_view json_text) {
  try {
    return DecodeUnguarded(json_text);
  } catch (const std::exception&) {
    return Corrupt("document");
  }
}

Result<std::unique_ptr<SimpleAuditSink>> SimpleAuditSink::Open(Env& env, Options options) {
  if (!options.clock_us) options.clock_us = SystemClockUs;
  KMSFS_ASSIGN_OR_RETURN(Db records, env.OpenDb(kRecordsDb, /*create=*/true));
  KMSFS_ASSIGN_OR_RETURN(Db meta, env.OpenDb(kMetaDb, /*create=*/true));
  return std::unique_ptr<SimpleAuditSink>(
      new SimpleAuditSink(env, records, meta, std::move(options.clock_us)));
}

Status SimpleAuditSink::Append(AuditRecord record) {
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_.BeginWrite());
  KMSFS_RETURN_IF_ERROR(AppendInTxn(txn, std::move(record)));
  return txn.Commit();
}

Status SimpleAuditSink::AppendInTxn(WriteTxn& txn, AuditRecord record) {
  // The counter is read and bumped inside the writer's transaction, so concurrent appends (each in
  // its own transaction, serialized by LMDB) get consecutive numbers, and a rolled-back change
  // leaves no gap.
  uint64_t next = 1;
  auto text = txn.Get(meta_, kNextSequenceKey);
  if (text.ok()) {
    char* end = nullptr;
    next = std::strtoull(text->c_str(), &end, 10);
    if (text->empty() || end != text->c_str() + text->size() || next == 0) {
      return Error(Code::kCorrupt, "audit_meta next_sequence is malformed");
    }
  } else if (text.error().code() != Code::kNotFound) {
    return text.error();
  }
  record.sequence = next;
  record.time_us = clock_us_();
  KMSFS_ASSIGN_OR_RETURN(std::string encoded, EncodeAuditRecord(record));
  KMSFS_RETURN_IF_ERROR(txn.Put(records_, SequenceKey(next), encoded, PutMode::kNoOverwrite));
  return txn.Put(meta_, kNextSequenceKey, std::to_string(next + 1));
}

Result<std::vector<AuditRecord>> SimpleAuditSink::Read(uint64_t after, size_t limit) const {
  if (limit == 0 || limit > kMaxRead) {
    return Error(Code::kInvalidArgument, "limit must be 1 to 1000");
  }
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_.BeginRead());
  std::vector<AuditRecord> out;
  Status err;
  const std::string start_after = after == 0 ? std::string() : SequenceKey(after);
  KMSFS_RETURN_IF_ERROR(
      txn.Scan(records_, "", start_after, [&](std::string_view, std::string_view v) {
        auto r = DecodeAuditRecord(v);
        if (!r.ok()) {
          err = r.status();
          return false;
        }
        out.push_back(std::move(*r));
        return out.size() < limit;
      }));
  if (!err.ok()) return err.error();
  return out;
}

}  // namespace kmsfs::keyd
