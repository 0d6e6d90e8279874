// kmsctl: the command-line client of kmsfs-keyd, with the subcommands and options of `aws kms`.
// Each subcommand is one row of a table (operation + options -> Params fields); the response is
// printed as json (the API's shape), text or table. Talks to keyd only through ipc::KeydClient.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/crypto/secret.h"
#include "common/format/base64.h"
#include "common/ipc/errors.h"
#include "common/ipc/keyd_client.h"
#include "common/ipc/message.h"
#include "common/ipc/operation.h"
#include "common/ipc/unix_socket.h"
#include "keyd/ctl/arguments.h"
#include "keyd/ctl/audit_commands.h"
#include "keyd/ctl/output.h"

namespace kmsfs::ctl {
namespace {

using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;

// How an option becomes a Params field.
enum class Kind {
  kString,   // as given
  kInt,      // a positive integer
  kText,     // file://PATH or the value
  kBlob,     // fileb://PATH or base64
  kMap,      // k=v,k2=v2 or JSON
  kTags,     // TagKey=k,TagValue=v ... (repeatable)
  kFlag,     // true when given
  kAbsPath,  // a path keyd opens itself: made absolute
};

struct OptionSpec {
  const char* flag;   // "--key-id", or a positional name without dashes
  const char* field;  // Params field
  Kind kind;
  bool required;
  const char* help;
  const char* default_value = nullptr;  // sent when not given
};

// An option that writes a binary result field to a file instead of printing it.
struct OutfileSpec {
  const char* flag;
  const char* field;
  const char* help;
};

struct CommandSpec {
  const char* name;
  ipc::Op op;
  const char* help;
  std::vector<OptionSpec> options;
  std::vector<OutfileSpec> outfiles;
};

constexpr const char* kKeyIdHelp = "key id or alias/NAME";

OptionSpec KeyId(bool required = true) {
  return {"--key-id", "KeyId", Kind::kString, required, kKeyIdHelp};
}
OptionSpec Limit() { return {"--limit", "Limit", Kind::kInt, false, "page size (1-1000)"}; }
OptionSpec Marker() {
  return {"--marker", "Marker", Kind::kString, false, "NextMarker of the previous page"};
}
OptionSpec Context(const char* flag = "--encryption-context",
                   const char* field = "EncryptionContext") {
  return {flag, field, Kind::kMap, false, "k=v,k2=v2 or a JSON object of strings"};
}
OptionSpec Bypass() {
  return {"--bypass-policy-lockout-safety-check", "BypassPolicyLockoutSafetyCheck", Kind::kFlag,
          false, "skip the check that the new policy still lets you change it"};
}
OptionSpec KeySpec() {
  return {"--key-spec", "KeySpec", Kind::kString, false,
          "AES_256 (default when --number-of-bytes is absent)"};
}
OptionSpec NumberOfBytes() {
  return {"--number-of-bytes", "NumberOfBytes", Kind::kInt, false,
          "data key length instead of --key-spec"};
}

std::vector<CommandSpec> Commands() {
  using ipc::Op;
  return {
      {"create-key",
       Op::kCreateKey,
       "Create a KMS key (Enabled, fresh material)",
       {{"--description", "Description", Kind::kString, false, "free text"},
        {"--policy", "Policy", Kind::kText, false, "key policy: file://PATH or JSON text"},
        {"--tags", "Tags", Kind::kTags, false, "TagKey=k,TagValue=v ... (repeatable)"},
        {"--key-spec", "KeySpec", Kind::kString, false, "SYMMETRIC_DEFAULT"},
        {"--key-usage", "KeyUsage", Kind::kString, false, "ENCRYPT_DECRYPT"},
        Bypass()},
       {}},
      {"describe-key", Op::kDescribeKey, "Show a key's metadata", {KeyId()}, {}},
      {"list-keys", Op::kListKeys, "List keys (one page)", {Limit(), Marker()}, {}},
      {"create-alias",
       Op::kCreateAlias,
       "Create alias/NAME for a key",
       {{"--alias-name", "AliasName", Kind::kString, true, "alias/NAME"},
        {"--target-key-id", "TargetKeyId", Kind::kString, true, "key id"}},
       {}},
      {"update-alias",
       Op::kUpdateAlias,
       "Point an alias at another key",
       {{"--alias-name", "AliasName", Kind::kString, true, "alias/NAME"},
        {"--target-key-id", "TargetKeyId", Kind::kString, true, "key id"}},
       {}},
      {"delete-alias",
       Op::kDeleteAlias,
       "Delete an alias",
       {{"--alias-name", "AliasName", Kind::kString, true, "alias/NAME"}},
       {}},
      {"list-aliases",
       Op::kListAliases,
       "List aliases (one page)",
       {KeyId(false), Limit(), Marker()},
       {}},
      {"enable-key", Op::kEnableKey, "Enable a key", {KeyId()}, {}},
      {"disable-key", Op::kDisableKey, "Disable a key (new opens fail at once)", {KeyId()}, {}},
      {"schedule-key-deletion",
       Op::kScheduleKeyDeletion,
       "Schedule a key's destruction after a waiting period",
       {KeyId(),
        {"--pending-window-in-days", "PendingWindowInDays", Kind::kInt, false,
         "waiting period in days"}},
       {}},
      {"cancel-key-deletion", Op::kCancelKeyDeletion, "Cancel a scheduled deletion", {KeyId()}, {}},
      {"rotate-key-on-demand", Op::kRotateKeyOnDemand, "Add a new key version now", {KeyId()}, {}},
      {"retire-key-version",
       Op::kRetireKeyVersion,
       "Take an old key version out of service now; destroy its material after a waiting period "
       "(check volumes first: kmsfs info --versions)",
       {KeyId(),
        {"--key-version", "KeyVersion", Kind::kInt, true, "the version number (not the primary)"},
        {"--pending-window-in-days", "PendingWindowInDays", Kind::kInt, false,
         "waiting period in days before the material is destroyed"}},
       {}},
      {"cancel-key-version-retirement",
       Op::kCancelKeyVersionRetirement,
       "Put a retired (not yet destroyed) key version back into service",
       {KeyId(), {"--key-version", "KeyVersion", Kind::kInt, true, "the version number"}},
       {}},
      {"list-key-versions",
       Op::kListKeyVersions,
       "List every version of a key with its state (kmsfs extension)",
       {KeyId()},
       {}},
      {"enable-key-rotation",
       Op::kEnableKeyRotation,
       "Rotate a key on a schedule",
       {KeyId(),
        {"--rotation-period-in-days", "RotationPeriodInDays", Kind::kInt, false,
         "days between rotations"}},
       {}},
      {"disable-key-rotation", Op::kDisableKeyRotation, "Stop scheduled rotation", {KeyId()}, {}},
      {"get-key-rotation-status",
       Op::kGetKeyRotationStatus,
       "Show rotation settings",
       {KeyId()},
       {}},
      {"list-key-rotations",
       Op::kListKeyRotations,
       "List a key's rotations",
       {KeyId(), Limit(), Marker()},
       {}},
      {"generate-data-key",
       Op::kGenerateDataKey,
       "New data key: plaintext and wrapped (Plaintext IS printed unless --plaintext-outfile)",
       {KeyId(), KeySpec(), NumberOfBytes(), Context()},
       {{"--plaintext-outfile", "Plaintext",
         "write the raw plaintext key here (mode 0600) instead of printing it"},
        {"--ciphertext-blob-outfile", "CiphertextBlob",
         "write the raw CiphertextBlob here instead of printing it"}}},
      {"generate-data-key-without-plaintext",
       Op::kGenerateDataKeyWithoutPlaintext,
       "New data key, wrapped only",
       {KeyId(), KeySpec(), NumberOfBytes(), Context()},
       {{"--outfile", "CiphertextBlob",
         "write the raw CiphertextBlob here instead of printing it"}}},
      {"encrypt",
       Op::kEncrypt,
       "Encrypt up to 4096 bytes under a key",
       {KeyId(),
        {"--plaintext", "Plaintext", Kind::kBlob, true, "fileb://PATH or base64"},
        Context()},
       {{"--outfile", "CiphertextBlob",
         "write the raw CiphertextBlob here instead of printing it"}}},
      {"decrypt",
       Op::kDecrypt,
       "Decrypt a CiphertextBlob (Plaintext IS printed, base64, unless --outfile)",
       {{"--ciphertext-blob", "CiphertextBlob", Kind::kBlob, true, "fileb://PATH or base64"},
        Context(),
        KeyId(false)},
       {{"--outfile", "Plaintext",
         "write the raw plaintext here (mode 0600; - for stdout) instead of printing it"}}},
      {"re-encrypt",
       Op::kReEncrypt,
       "Re-wrap a CiphertextBlob under another key or context",
       {{"--ciphertext-blob", "CiphertextBlob", Kind::kBlob, true, "fileb://PATH or base64"},
        {"--destination-key-id", "DestinationKeyId", Kind::kString, true, kKeyIdHelp},
        Context("--source-encryption-context", "SourceEncryptionContext"),
        Context("--destination-encryption-context", "DestinationEncryptionContext"),
        {"--source-key-id", "SourceKeyId", Kind::kString, false, kKeyIdHelp}},
       {{"--outfile", "CiphertextBlob",
         "write the raw CiphertextBlob here instead of printing it"}}},
      {"put-key-policy",
       Op::kPutKeyPolicy,
       "Replace a key's policy",
       {KeyId(),
        {"--policy", "Policy", Kind::kText, true, "file://PATH or JSON text"},
        {"--policy-name", "PolicyName", Kind::kString, false, "default", "default"},
        Bypass()},
       {}},
      {"get-key-policy",
       Op::kGetKeyPolicy,
       "Show a key's policy",
       {KeyId(), {"--policy-name", "PolicyName", Kind::kString, false, "default", "default"}},
       {}},
      {"backup",
       Op::kBackup,
       "keyd writes a consistent copy of its state to FILE (a new file, written by keyd itself)",
       {{"file", "Path", Kind::kAbsPath, true, "where keyd writes the backup (must not exist)"}},
       {}},
      {"ping", Op::kPing, "Check that keyd answers (kmsfs extension)", {}, {}},
      {"status", Op::kStatus, "keyd's health (kmsfs extension)", {}, {}},
  };
}

struct Bound {
  std::string value;
  int64_t number = 0;  // Kind::kInt
  std::vector<std::string> values;
  bool flag = false;
  CLI::Option* option = nullptr;
};

struct BoundCommand {
  const CommandSpec* spec = nullptr;
  CLI::App* app = nullptr;
  std::deque<Bound> options;   // parallel to spec->options (deque: stable addresses)
  std::deque<Bound> outfiles;  // parallel to spec->outfiles
};

std::string Footer() {
  return R"(
Global options (--socket, --output) may come before or after the subcommand.
The socket is --socket, else $KMSFS_SOCKET, else /run/kmsfs/keyd.sock.

Output (--output):
  json   the operation's response object exactly, as `aws kms ... --output json` (default)
  text   tab-separated values, as the AWS CLI's text output
  table  aligned columns, for people
  Operations without response fields (enable-key, create-alias, ...) print nothing.
  --query is not supported; use jq on the json output.

Binary values are base64 in json/text output (CiphertextBlob, Plaintext), as the AWS CLI.
  Input: fileb://PATH reads raw bytes; any other value must be base64 (AWS CLI v2 default).
  Output: encrypt, decrypt, re-encrypt and generate-data-key-without-plaintext take
  --outfile PATH to write the raw bytes of their blob (Plaintext for decrypt) to PATH (created
  mode 0600; "-" for stdout) instead of printing it; generate-data-key takes
  --plaintext-outfile and --ciphertext-blob-outfile.
  Plaintext keys and data ARE printed by generate-data-key and decrypt unless redirected so:
  like `aws kms`, kmsctl shows what the API returns.

Exit codes:
  0 ok   1 internal error or unsupported   2 usage or validation error   3 not found
  4 access denied   5 key disabled / pending deletion / unavailable   6 invalid ciphertext
  7 keyd unreachable or timed out   8 already exists
  9 audit verify: the hash chain is broken (the message names the first bad sequence)
  test-access exits 0 when the simulated request is allowed and 4 when it is denied.
Errors are printed as "kmsctl: NotFoundException: <message>" on stderr.
)";
}

// Params for one parsed command; kInvalidArgument/kIo on a bad argument.
Result<json> BuildParams(const BoundCommand& cmd) {
  json params = json::object();
  for (size_t i = 0; i < cmd.spec->options.size(); ++i) {
    const OptionSpec& o = cmd.spec->options[i];
    const Bound& b = cmd.options[i];
    const bool given = b.option->count() > 0;
    if (!given) {
      if (o.default_value != nullptr) params[o.field] = o.default_value;
      continue;
    }
    switch (o.kind) {
      case Kind::kString:
        params[o.field] = b.value;
        break;
      case Kind::kInt:
        params[o.field] = b.number;  // CLI11 parsed a positive integer; keyd checks the range
        break;
      case Kind::kText: {
        KMSFS_ASSIGN_OR_RETURN(std::string text, TextArgument(o.flag, b.value));
        params[o.field] = std::move(text);
        break;
      }
      case Kind::kBlob: {
        KMSFS_ASSIGN_OR_RETURN(std::string blob, BlobArgument(o.flag, b.value));
        params[o.field] = std::move(blob);
        break;
      }
      case Kind::kMap: {
        KMSFS_ASSIGN_OR_RETURN(json map, MapArgument(o.flag, b.value));
        params[o.field] = std::move(map);
        break;
      }
      case Kind::kTags: {
        KMSFS_ASSIGN_OR_RETURN(json tags, TagsArgument(b.values));
        params[o.field] = std::move(tags);
        break;
      }
      case Kind::kFlag:
        params[o.field] = true;
        break;
      case Kind::kAbsPath:
        params[o.field] = AbsolutePath(b.value);
        break;
    }
  }
  // kmsfs has one data key size: AES_256 unless the caller asked for a byte count.
  if ((cmd.spec->op == ipc::Op::kGenerateDataKey ||
       cmd.spec->op == ipc::Op::kGenerateDataKeyWithoutPlaintext) &&
      !params.contains("KeySpec") && !params.contains("NumberOfBytes")) {
    params["KeySpec"] = "AES_256";
  }
  return params;
}

void PrintError(std::string_view name, std::string_view message) {
  std::fprintf(stderr, "kmsctl: %.*s: %.*s\n", static_cast<int>(name.size()), name.data(),
               static_cast<int>(message.size()), message.data());
}

// Writes the result fields redirected by --outfile options and removes them from `result`.
Status WriteOutfiles(const BoundCommand& cmd, json& result) {
  for (size_t i = 0; i < cmd.spec->outfiles.size(); ++i) {
    const Bound& b = cmd.outfiles[i];
    if (b.option->count() == 0) continue;
    const char* field = cmd.spec->outfiles[i].field;
    const auto it = result.find(field);
    if (it == result.end() || !it->is_string()) {
      return Error(Code::kInternal, std::string("the response has no ") + field);
    }
    auto bytes = format::Base64Decode(it->get_ref<const std::string&>());
    if (!bytes.ok())
      return Error(Code::kInternal, std::string("the response's ") + field + " is not base64");
    Status written = WriteOutputFile(b.value, AsChars(*bytes));
    crypto::Wipe(std::span<uint8_t>(*bytes));
    KMSFS_RETURN_IF_ERROR(written);
    crypto::Wipe(it->get_ref<std::string&>());
    result.erase(field);
  }
  return Status::Ok();
}

int Main(int argc, char** argv) {
  // kmsctl handles plaintext keys (generate-data-key, decrypt): no core dumps, no ptrace by others.
  (void)crypto::HardenProcess();

  CLI::App app{
      "kmsctl: manage kmsfs keys and use them (the `aws kms` commands, against kmsfs-keyd)",
      "kmsctl"};
  app.footer(Footer());
  app.require_subcommand(1);
  std::string socket_flag;
  std::string output_flag = "json";
  app.add_option("--socket", socket_flag,
                 "keyd's socket (default $KMSFS_SOCKET, else /run/kmsfs/keyd.sock)");
  app.add_option("--output", output_flag, "json | text | table")
      ->check(CLI::IsMember({"json", "text", "table"}))
      ->capture_default_str();

  const std::vector<CommandSpec> specs = Commands();
  std::deque<BoundCommand> bound;
  for (const CommandSpec& spec : specs) {
    BoundCommand& cmd = bound.emplace_back();
    cmd.spec = &spec;
    cmd.app = app.add_subcommand(spec.name, spec.help);
    cmd.app->fallthrough();  // global options after the subcommand, as aws allows
    for (const OptionSpec& o : spec.options) {
      Bound& b = cmd.options.emplace_back();
      std::string help = o.help;
      if (o.default_value != nullptr) help += std::string(" (default ") + o.default_value + ")";
      switch (o.kind) {
        case Kind::kFlag:
          b.option = cmd.app->add_flag(o.flag, b.flag, help);
          break;
        case Kind::kTags:
          b.option = cmd.app->add_option(o.flag, b.values, help);
          break;
        case Kind::kInt:
          // Our own check: CLI11's PositiveNumber prints "not in range 0.000000 to 1.79e308".
          b.option = cmd.app->add_option(o.flag, b.number, help)
                         ->check(CLI::Validator(
                             [](std::string& v) -> std::string {
                               char* end = nullptr;
                               errno = 0;
                               const long long n = std::strtoll(v.c_str(), &end, 10);
                               if (errno != 0 || end == v.c_str() || *end != '\0' || n < 1) {
                                 return "must be a positive integer, got '" + v + "'";
                               }
                               return std::string();
                             },
                             "POSITIVE", "positive integer"));
          break;
        default:
          b.option = cmd.app->add_option(o.flag, b.value, help);
          break;
      }
      if (o.required) b.option->required();
    }
    for (const OutfileSpec& o : spec.outfiles) {
      Bound& b = cmd.outfiles.emplace_back();
      b.option = cmd.app->add_option(o.flag, b.value, o.help);
    }
  }

  AuditCommands audit_commands(app);  // audit list|tail|verify|..., test-access

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    return kExitUsage;
  }

  const BoundCommand* cmd = nullptr;
  for (const BoundCommand& c : bound) {
    if (c.app->parsed()) cmd = &c;
  }
  if (cmd == nullptr && audit_commands.Parsed()) {
    auto socket_path = ipc::ResolveSocketPath(socket_flag);
    if (!socket_path.ok()) {
      std::fprintf(stderr, "kmsctl: %s\n", socket_path.error().message().c_str());
      return kExitUsage;
    }
    return audit_commands.Run(*socket_path, ParseOutputFormat(output_flag).value());
  }
  if (cmd == nullptr) {
    std::fprintf(stderr, "kmsctl: a subcommand is required (kmsctl --help)\n");
    return kExitUsage;
  }
  const OutputFormat format = ParseOutputFormat(output_flag).value();  // checked by CLI11

  auto socket_path = ipc::ResolveSocketPath(socket_flag);
  if (!socket_path.ok()) {
    std::fprintf(stderr, "kmsctl: %s\n", socket_path.error().message().c_str());
    return kExitUsage;
  }
  auto params = BuildParams(*cmd);
  if (!params.ok()) {
    std::fprintf(stderr, "kmsctl: %s\n", params.error().message().c_str());
    return kExitUsage;
  }

  ipc::KeydClient client(*socket_path);
  auto response = client.Exchange(cmd->spec->op, std::move(params).value());
  if (!response.ok()) {
    PrintError(ipc::ErrorNameOf(response.error()), ipc::ErrorMessageOf(response.error()));
    return ipc::ExitCodeForCode(response.error().code());
  }
  if (!response->ok()) {
    const Error e = ipc::FromErrorInfo(*response->error);  // sanitizes the message
    PrintError(ipc::ErrorNameOf(e), ipc::ErrorMessageOf(e));
    return ipc::ExitCodeForCode(e.code());
  }
  json& result = response->result;
  if (Status s = WriteOutfiles(*cmd, result); !s.ok()) {
    ipc::WipeJsonStrings(result);
    std::fprintf(stderr, "kmsctl: %s\n", s.error().message().c_str());
    return ipc::ExitCodeForCode(s.error().code() == Code::kIo ? Code::kInternal : s.error().code());
  }
  std::string text = Render(result, format);
  ipc::WipeJsonStrings(result);
  std::fwrite(text.data(), 1, text.size(), stdout);
  crypto::Wipe(text);
  if (std::fflush(stdout) != 0) {
    std::fprintf(stderr, "kmsctl: cannot write the output\n");
    return 1;
  }
  return kExitOk;
}

}  // namespace
}  // namespace kmsfs::ctl

int main(int argc, char** argv) {
  try {
    return kmsfs::ctl::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kmsctl: fatal: %s\n", e.what());
    return 1;
  }
}
