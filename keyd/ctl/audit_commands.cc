#include "keyd/ctl/audit_commands.h"

#include <pwd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/ipc/errors.h"
#include "common/ipc/keyd_client.h"
#include "common/ipc/operation.h"
#include "keyd/ctl/arguments.h"

namespace kmsfs::ctl {
namespace {

using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int64_t kPageSize = 1000;

void PrintError(std::string_view name, std::string_view message) {
  std::fprintf(stderr, "kmsctl: %.*s: %.*s\n", static_cast<int>(name.size()), name.data(),
               static_cast<int>(message.size()), message.data());
}

// One request; on failure prints the error line and sets *exit_code.
std::optional<json> Call(ipc::KeydClient& client, ipc::Op op, json params, int* exit_code) {
  auto response = client.Exchange(op, std::move(params));
  if (!response.ok()) {
    PrintError(ipc::ErrorNameOf(response.error()), ipc::ErrorMessageOf(response.error()));
    *exit_code = ipc::ExitCodeForCode(response.error().code());
    return std::nullopt;
  }
  if (!response->ok()) {
    const Error e = ipc::FromErrorInfo(*response->error);
    PrintError(ipc::ErrorNameOf(e), ipc::ErrorMessageOf(e));
    *exit_code = ipc::ExitCodeForCode(e.code());
    return std::nullopt;
  }
  return std::move(response->result);
}

bool Print(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  return std::fflush(stdout) == 0;
}

std::string Str(const json& j, const char* field) {
  const auto it = j.find(field);
  if (it == j.end() || it->is_null()) return "-";
  if (it->is_string()) return it->get<std::string>().empty() ? "-" : it->get<std::string>();
  return it->dump();
}

// One audit record as a line: JSON (compact, one per line — jq-friendly), tab-separated text, or
// aligned columns for people.
std::string RecordLine(const json& r, OutputFormat format) {
  if (format == OutputFormat::kJson) return r.dump() + "\n";
  std::string uid = "-";
  if (r.contains("Principal") && r["Principal"].is_object()) uid = Str(r["Principal"], "Uid");
  const std::vector<std::string> cols = {
      Str(r, "Sequence"), Str(r, "Time"),     Str(r, "Operation"), Str(r, "KeyId"),  uid,
      Str(r, "Path"),     Str(r, "Decision"), Str(r, "Sid"),       Str(r, "Outcome")};
  std::string line;
  if (format == OutputFormat::kText) {
    for (size_t i = 0; i < cols.size(); ++i) line += (i ? "\t" : "") + cols[i];
    return line + "\n";
  }
  static constexpr int kWidths[] = {6, 27, 20, 36, 6, 24, 8, 16, 0};
  for (size_t i = 0; i < cols.size(); ++i) {
    line += cols[i];
    if (kWidths[i] > 0) {
      line += std::string(
          cols[i].size() < static_cast<size_t>(kWidths[i]) ? kWidths[i] - cols[i].size() + 1 : 1,
          ' ');
    }
  }
  return line + "\n";
}

std::string TableHeader() {
  return RecordLine(json{{"Sequence", "SEQ"},
                         {"Time", "TIME"},
                         {"Operation", "OPERATION"},
                         {"KeyId", "KEY"},
                         {"Principal", {{"Uid", "UID"}}},
                         {"Path", "PATH"},
                         {"Decision", "DECISION"},
                         {"Sid", "SID"},
                         {"Outcome", "OUTCOME"}},
                    OutputFormat::kTable);
}

// The checkpoint in a file written by `kmsctl audit checkpoint --out` or an export (its last
// line, {"Checkpoint":{...}}).
Result<json> ReadCheckpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(Code::kIo, "--checkpoint: cannot open " + path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  const size_t nl = text.rfind('\n');
  const std::string last = nl == std::string::npos ? text : text.substr(nl + 1);
  json j = json::parse(last, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("Checkpoint")) j = j["Checkpoint"];
  if (!j.is_object() || !j.contains("Sequence") || !j.contains("Hash")) {
    return Error(Code::kInvalidArgument,
                 "--checkpoint: " + path +
                     " holds no checkpoint (expected kmsctl audit checkpoint --out output or an "
                     "audit export)");
  }
  return j;
}

}  // namespace

struct AuditCommands::State {
  CLI::App* audit = nullptr;
  CLI::App *list = nullptr, *tail = nullptr, *verify = nullptr, *checkpoint = nullptr,
           *exp = nullptr, *prune = nullptr, *test_access = nullptr;
  // list
  std::string start_time, end_time, key_id, path_prefix, operation, outcome;
  int64_t uid = -1, limit = 1000;
  // tail
  bool follow = false;
  double interval = 1.0;
  int64_t lines = 10;
  // verify / checkpoint / export / prune
  std::string checkpoint_file, out_file, export_file;
  int64_t from = 0, to = 0, up_to = 0;
  // test-access
  std::string ta_key, ta_action, ta_path, ta_exe, ta_unit, ta_context;
  int64_t ta_uid = -1, ta_gid = -1;

  int List(ipc::KeydClient& client, OutputFormat format);
  int Tail(ipc::KeydClient& client, OutputFormat format);
  int Verify(ipc::KeydClient& client, OutputFormat format);
  int Checkpoint(ipc::KeydClient& client, OutputFormat format);
  int Export(ipc::KeydClient& client, OutputFormat format);
  int Prune(ipc::KeydClient& client, OutputFormat format);
  int TestAccess(ipc::KeydClient& client, OutputFormat format);
};

AuditCommands::AuditCommands(CLI::App& app) : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.audit = app.add_subcommand(
      "audit", "Read and maintain keyd's hash-chained audit trail (uid 0 only; docs/audit.md)");
  s.audit->require_subcommand(1);
  s.audit->fallthrough();

  s.list = s.audit->add_subcommand(
      "list", "Records matching the filters (json: one JSON record per line; table: for people)");
  s.list->add_option("--start-time", s.start_time, "RFC 3339, e.g. 2024-05-01T12:00:00Z (>=)");
  s.list->add_option("--end-time", s.end_time, "RFC 3339 (<)");
  s.list->add_option("--key-id", s.key_id, "key id or alias/NAME");
  s.list->add_option("--uid", s.uid, "the principal's uid")->check(CLI::NonNegativeNumber);
  s.list->add_option("--path-prefix", s.path_prefix, "/a/b matches /a/b and /a/b/..., not /a/bc");
  s.list->add_option("--operation", s.operation, "e.g. Decrypt");
  s.list->add_option("--outcome", s.outcome, "Success or an error name");
  s.list->add_option("--limit", s.limit, "most records printed (default 1000)")
      ->check(CLI::PositiveNumber);

  s.tail = s.audit->add_subcommand("tail", "The newest records; --follow polls for new ones");
  s.tail->add_flag("--follow,-f", s.follow, "keep printing records as they are appended");
  s.tail->add_option("--interval", s.interval, "seconds between polls (default 1)")
      ->check(CLI::Range(0.05, 3600.0));
  s.tail->add_option("--lines,-n", s.lines, "how many of the newest records first (default 10)")
      ->check(CLI::NonNegativeNumber);

  s.verify = s.audit->add_subcommand(
      "verify", "Verify the hash chain (exit 0 ok; 9 broken, naming the first bad sequence)");
  s.verify->add_option("--checkpoint", s.checkpoint_file,
                       "a checkpoint kept elsewhere (checkpoint --out file or an export)");

  s.checkpoint =
      s.audit->add_subcommand("checkpoint", "Store and print a checkpoint at the trail's head");
  s.checkpoint->add_option("--out", s.out_file, "also write it to FILE (keep it off the host)");

  s.exp = s.audit->add_subcommand(
      "export", "keyd writes records --from..--to as JSON lines + a checkpoint to FILE (new)");
  s.exp->add_option("--from", s.from, "first sequence (default: the first kept)")
      ->check(CLI::NonNegativeNumber);
  s.exp->add_option("--to", s.to, "last sequence (default: the head)")
      ->check(CLI::NonNegativeNumber);
  s.exp->add_option("file", s.export_file, "where keyd writes the export (must not exist)")
      ->required();

  s.prune = s.audit->add_subcommand(
      "prune", "Delete records <= --up-to (must be an exported/stored checkpoint)");
  s.prune->add_option("--up-to", s.up_to, "last sequence to delete")
      ->required()
      ->check(CLI::PositiveNumber);

  for (CLI::App* sub : {s.list, s.tail, s.verify, s.checkpoint, s.exp, s.prune}) {
    sub->fallthrough();
  }

  s.test_access = app.add_subcommand(
      "test-access",
      "Simulate a request against a key's policy: prints Allow/Deny and the deciding statement "
      "(exit 0 Allow, 4 Deny; needs kms:GetKeyPolicy on the key)");
  s.test_access->fallthrough();
  s.test_access->add_option("--key-id", s.ta_key, "key id or alias/NAME")->required();
  s.test_access->add_option("--action", s.ta_action, "e.g. kms:Decrypt")->required();
  s.test_access->add_option("--uid", s.ta_uid, "simulated uid (default: yours)")
      ->check(CLI::NonNegativeNumber);
  s.test_access
      ->add_option("--gid", s.ta_gid, "simulated primary gid (default: the --uid user's, or yours)")
      ->check(CLI::NonNegativeNumber);
  s.test_access->add_option("--path", s.ta_path, "kmsfs:Path, a path inside the volume (/a/b)");
  s.test_access->add_option("--executable", s.ta_exe, "kmsfs:Executable");
  s.test_access->add_option("--unit", s.ta_unit, "kmsfs:Unit, e.g. postgresql.service");
  s.test_access->add_option("--encryption-context", s.ta_context,
                            "k=v,k2=v2 or a JSON object of strings");
}

AuditCommands::~AuditCommands() = default;

bool AuditCommands::Parsed() const { return s_->audit->parsed() || s_->test_access->parsed(); }

int AuditCommands::Run(const std::string& socket_path, OutputFormat format) {
  ipc::KeydClient client(socket_path);
  State& s = *s_;
  if (s.test_access->parsed()) return s.TestAccess(client, format);
  if (s.list->parsed()) return s.List(client, format);
  if (s.tail->parsed()) return s.Tail(client, format);
  if (s.verify->parsed()) return s.Verify(client, format);
  if (s.checkpoint->parsed()) return s.Checkpoint(client, format);
  if (s.exp->parsed()) return s.Export(client, format);
  if (s.prune->parsed()) return s.Prune(client, format);
  std::fprintf(stderr, "kmsctl: audit needs a subcommand (kmsctl audit --help)\n");
  return kExitUsage;
}

int AuditCommands::State::List(ipc::KeydClient& client, OutputFormat format) {
  json base = json::object();
  if (list->count("--start-time")) base["StartTime"] = start_time;
  if (list->count("--end-time")) base["EndTime"] = end_time;
  if (list->count("--key-id")) base["KeyId"] = key_id;
  if (list->count("--uid")) base["Uid"] = uid;
  if (list->count("--path-prefix")) base["PathPrefix"] = path_prefix;
  if (list->count("--operation")) base["Operation"] = operation;
  if (list->count("--outcome")) base["Outcome"] = outcome;
  if (format == OutputFormat::kTable && !Print(TableHeader())) return 1;
  int64_t remaining = limit;
  uint64_t after = 0;
  int code = kExitOk;
  while (remaining > 0) {
    json params = base;
    params["Limit"] = std::min(remaining, kPageSize);
    params["After"] = after;
    auto r = Call(client, ipc::Op::kListAudit, std::move(params), &code);
    if (!r) return code;
    std::string text;
    for (const json& rec : (*r)["Records"]) text += RecordLine(rec, format);
    if (!Print(text)) return 1;
    remaining -= static_cast<int64_t>((*r)["Records"].size());
    const uint64_t next = (*r).value("NextSequence", after);
    if (!(*r).value("Truncated", false) || next <= after) break;
    after = next;
  }
  return kExitOk;
}

int AuditCommands::State::Tail(ipc::KeydClient& client, OutputFormat format) {
  int code = kExitOk;
  auto head = Call(client, ipc::Op::kListAudit, json{{"Limit", 1}, {"After", 0}}, &code);
  if (!head) return code;
  const uint64_t head_seq = (*head).value("HeadSequence", uint64_t{0});
  uint64_t after = head_seq > static_cast<uint64_t>(lines) ? head_seq - lines : 0;
  if (format == OutputFormat::kTable && !Print(TableHeader())) return 1;
  for (;;) {
    auto r = Call(client, ipc::Op::kListAudit, json{{"Limit", kPageSize}, {"After", after}}, &code);
    if (!r) return code;
    std::string text;
    for (const json& rec : (*r)["Records"]) text += RecordLine(rec, format);
    if (!Print(text)) return 1;
    after = std::max(after, (*r).value("NextSequence", after));
    if ((*r).value("Truncated", false)) continue;
    if (!follow) return kExitOk;
    std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  }
}

int AuditCommands::State::Verify(ipc::KeydClient& client, OutputFormat format) {
  json params = json::object();
  if (!checkpoint_file.empty()) {
    auto c = ReadCheckpoint(checkpoint_file);
    if (!c.ok()) {
      std::fprintf(stderr, "kmsctl: %s\n", c.error().message().c_str());
      return kExitUsage;
    }
    params["Checkpoint"] = *c;
  }
  int code = kExitOk;
  auto r = Call(client, ipc::Op::kVerifyAudit, std::move(params), &code);
  if (!r) return code;
  if (!Print(Render(*r, format))) return 1;
  if (!(*r).value("Ok", false)) {
    std::fprintf(stderr, "kmsctl: audit trail verification FAILED at sequence %s: %s\n",
                 Str(*r, "BadSequence").c_str(), Str(*r, "Message").c_str());
    return kExitVerifyFailed;
  }
  return kExitOk;
}

int AuditCommands::State::Checkpoint(ipc::KeydClient& client, OutputFormat format) {
  int code = kExitOk;
  auto r = Call(client, ipc::Op::kGetAuditCheckpoint, json::object(), &code);
  if (!r) return code;
  if (!out_file.empty()) {
    Status s = WriteOutputFile(out_file, r->dump() + "\n");
    if (!s.ok()) {
      std::fprintf(stderr, "kmsctl: %s\n", s.error().message().c_str());
      return 1;
    }
  }
  return Print(Render(*r, format)) ? kExitOk : 1;
}

int AuditCommands::State::Export(ipc::KeydClient& client, OutputFormat format) {
  int code = kExitOk;
  auto r = Call(client, ipc::Op::kExportAudit,
                json{{"From", from}, {"To", to}, {"Path", AbsolutePath(export_file)}}, &code);
  if (!r) return code;
  return Print(Render(*r, format)) ? kExitOk : 1;
}

int AuditCommands::State::Prune(ipc::KeydClient& client, OutputFormat format) {
  int code = kExitOk;
  auto r = Call(client, ipc::Op::kPruneAudit, json{{"UpTo", up_to}}, &code);
  if (!r) return code;
  return Print(Render(*r, format)) ? kExitOk : 1;
}

int AuditCommands::State::TestAccess(ipc::KeydClient& client, OutputFormat format) {
  json params = {{"KeyId", ta_key}, {"Action", ta_action}};
  if (ta_uid >= 0) {
    int64_t gid = ta_gid;
    if (gid < 0) {
      // The simulated user's primary group, as the kernel would report it for their process.
      struct passwd pw {};
      struct passwd* found = nullptr;
      std::vector<char> buf(16384);
      if (::getpwuid_r(static_cast<uid_t>(ta_uid), &pw, buf.data(), buf.size(), &found) != 0 ||
          found == nullptr) {
        std::fprintf(stderr, "kmsctl: --uid %lld is not in the user database; give --gid too\n",
                     static_cast<long long>(ta_uid));
        return kExitUsage;
      }
      gid = pw.pw_gid;
    }
    params["Uid"] = ta_uid;
    params["Gid"] = gid;
  } else if (ta_gid >= 0) {
    params["Gid"] = ta_gid;
  }
  if (!ta_path.empty()) params["Path"] = ta_path;
  if (!ta_exe.empty()) params["Executable"] = ta_exe;
  if (!ta_unit.empty()) params["Unit"] = ta_unit;
  if (!ta_context.empty()) {
    auto ctx = MapArgument("--encryption-context", ta_context);
    if (!ctx.ok()) {
      std::fprintf(stderr, "kmsctl: %s\n", ctx.error().message().c_str());
      return kExitUsage;
    }
    params["EncryptionContext"] = *ctx;
  }
  int code = kExitOk;
  auto r = Call(client, ipc::Op::kTestAccess, std::move(params), &code);
  if (!r) return code;
  std::string text;
  if (format == OutputFormat::kText) {
    text = Str(*r, "Decision") + "\t" + Str(*r, "Sid") + "\t" + Str(*r, "Reason") + "\n";
  } else {
    text = Render(*r, format);
  }
  if (!Print(text)) return 1;
  return (*r).value("Decision", "") == "Allow" ? kExitOk : kExitDenied;
}

}  // namespace kmsfs::ctl
