// Issue 3: "exercise every operation through kmsctl and through the client library, including
// every error case listed". What kmsctl_test.cc already covers (create/describe, one alias,
// generate-data-key/decrypt, files in and out, disable/enable, backup FILE) is not repeated; this
// file adds the rest: every op both ways, every error name with kmsctl's exit code
// (docs/errors.md) and stderr line, pagination, aliases and ARNs as KeyIds, ReEncrypt, uid 1000,
// and restoring a backup.
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "common/base/bytes.h"
#include "common/format/base64.h"
#include "common/format/wrapped_blob.h"
#include "common/ipc/errors.h"
#include "common/ipc/keyd_client.h"
#include "tests/catch.h"
#include "tests/integration/harness.h"

namespace kmsfs::it {
namespace {

using nlohmann::json;

constexpr const char* kCtx = "kmsfs:volume=ops,kmsfs:file=f1";
const ipc::EncryptionContext kContext = {{"kmsfs:volume", "ops"}, {"kmsfs:file", "f1"}};

// kmsctl's exit status per error name (docs/errors.md §1 name -> code, §2 code -> exit).
int ExitFor(const std::string& name) {
  if (name == "NotFoundException") return 3;
  if (name == "AlreadyExistsException") return 8;
  if (name == "ValidationException") return 2;
  if (name == "AccessDeniedException") return 4;
  if (name == "KMSInvalidStateException" || name == "DisabledException") return 5;
  if (name == "InvalidCiphertextException" || name == "IncorrectKeyException") return 6;
  FAIL("no exit code for " << name);
  return -1;
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

json CtlOk(Sandbox& box, const std::vector<std::string>& args) {
  auto r = box.Ctl(args);
  INFO("kmsctl " << args[0] << ": exit " << r.exit_code << " " << r.err);
  REQUIRE(r.exit_code == 0);
  return r.json;
}

json CallOk(ipc::KeydClient& client, ipc::Op op, json params) {
  auto r = client.Call(op, std::move(params));
  INFO(ipc::OpName(op) << ": " << (r.ok() ? std::string("ok") : r.error().ToString()));
  REQUIRE(r.ok());
  return *r;
}

std::string NewKey(Sandbox& box, const std::string& description) {
  return CtlOk(box, {"create-key", "--description", description})["KeyMetadata"]["KeyId"]
      .get<std::string>();
}

std::string B64(ByteSpan b) { return format::Base64Encode(b); }
Bytes Unb64(const std::string& s) {
  auto r = format::Base64Decode(s);
  REQUIRE(r.ok());
  return *r;
}
Bytes Plain(const crypto::SecretBytes& s) { return Bytes(s.span().begin(), s.span().end()); }

// The client library gets error `name` (the response's Error.Name, and Call's Error via
// ErrorNameOf), with a message.
void ClientFails(ipc::KeydClient& client, ipc::Op op, const json& params,
                 const std::string& name) {
  auto ex = client.Exchange(op, params);
  INFO(ipc::OpName(op) << " " << params.dump() << " expecting " << name);
  REQUIRE(ex.ok());
  REQUIRE_FALSE(ex->ok());
  CHECK(ex->error->name == name);
  CHECK_FALSE(ex->error->message.empty());
  auto call = client.Call(op, params);
  REQUIRE_FALSE(call.ok());
  CHECK(ipc::ErrorNameOf(call.error()) == name);
  CHECK(call.error().code() == ipc::CodeForErrorName(name));
}

// kmsctl exits per docs/errors.md and its one stderr line names the exception.
void CtlFails(const RunResult& r, const std::string& name, const std::string& what) {
  INFO("kmsctl " << what << " expecting " << name << ": exit " << r.exit_code << ", stderr: "
                 << r.err << ", stdout: " << r.out);
  CHECK(r.exit_code == ExitFor(name));
  CHECK(StartsWith(r.err, "kmsctl: " + name + ": "));
  CHECK(r.err.size() > ("kmsctl: " + name + ": \n").size());  // a message follows the name
  CHECK(r.out.empty());
}

// Both paths at once.
void BothFail(Sandbox& box, ipc::KeydClient& client, ipc::Op op, const json& params,
              const std::vector<std::string>& ctl, const std::string& name) {
  ClientFails(client, op, params, name);
  CtlFails(box.Ctl(ctl), name, ctl[0]);
}

// Runs `fn` in a child that dropped to uid/gid 1000 (no groups); returns the Error.Name it got
// from keyd ("" for success). The client library as an unprivileged local user.
std::string AsUid1000(const std::function<std::string()>& fn) {
  return InChildOutput([&] {
    if (!BecomeUser(1000, 1000)) ::_exit(99);
    return fn();
  });
}

std::string NameOf(const Result<json>& r) {
  return r.ok() ? std::string() : std::string(ipc::ErrorNameOf(r.error()));
}

TEST_CASE("every operation works through the client library and through kmsctl",
          "[keyd][ops]") {
  Sandbox box;
  auto keyd = box.StartKeyd();
  ipc::KeydClient client(box.socket_path());
  std::vector<std::string> secrets = {box.root_key_hex()};

  // Ping, Status.
  CHECK(CallOk(client, ipc::Op::kPing, json::object()).contains("Version"));
  CHECK(CtlOk(box, {"ping"}).contains("Version"));
  json status = CallOk(client, ipc::Op::kStatus, json::object());
  CHECK(status["KeyCount"] == 0);
  CHECK(CtlOk(box, {"status"})["KeyCount"] == 0);

  // CreateKey (Description, Tags) both ways; DescribeKey by id, alias and ARN.
  json lib_meta = CallOk(client, ipc::Op::kCreateKey,
                         {{"Description", "lib"},
                          {"Tags", json::array({{{"TagKey", "team"}, {"TagValue", "x"}}})}})
      ["KeyMetadata"];
  const std::string a = lib_meta["KeyId"].get<std::string>();
  CHECK(lib_meta["KeyState"] == "Enabled");
  CHECK(lib_meta["Enabled"] == true);
  CHECK(lib_meta["KeySpec"] == "SYMMETRIC_DEFAULT");
  CHECK(lib_meta["KeyUsage"] == "ENCRYPT_DECRYPT");
  CHECK(lib_meta["Arn"] == "arn:kmsfs:kms:local::key/" + a);
  const std::string b = NewKey(box, "ctl");
  CHECK(CallOk(client, ipc::Op::kStatus, json::object())["KeyCount"] == 2);

  CHECK(CallOk(client, ipc::Op::kDescribeKey, {{"KeyId", b}})["KeyMetadata"]["Description"] ==
        "ctl");
  CHECK(CtlOk(box, {"describe-key", "--key-id", a})["KeyMetadata"]["Description"] == "lib");
  CHECK(CtlOk(box, {"describe-key", "--key-id", "arn:kmsfs:kms:local::key/" + a})
            ["KeyMetadata"]["KeyId"] == a);

  // Aliases: create, list (all and per key), update, delete — and usable as KeyIds.
  CallOk(client, ipc::Op::kCreateAlias, {{"AliasName", "alias/ops/a"}, {"TargetKeyId", a}});
  CtlOk(box, {"create-alias", "--alias-name", "alias/ops/b", "--target-key-id", b});
  CtlOk(box, {"create-alias", "--alias-name", "alias/ops/moving", "--target-key-id", a});
  json aliases = CallOk(client, ipc::Op::kListAliases, json::object())["Aliases"];
  CHECK(aliases.size() == 3);
  json for_b = CtlOk(box, {"list-aliases", "--key-id", b})["Aliases"];
  REQUIRE(for_b.size() == 1);
  CHECK(for_b[0]["AliasName"] == "alias/ops/b");
  CHECK(for_b[0]["TargetKeyId"] == b);
  CHECK(for_b[0]["AliasArn"] == "arn:kmsfs:kms:local::alias/ops/b");
  CHECK(CtlOk(box, {"describe-key", "--key-id", "alias/ops/a"})["KeyMetadata"]["KeyId"] == a);
  CHECK(CallOk(client, ipc::Op::kDescribeKey, {{"KeyId", "arn:kmsfs:kms:local::alias/ops/b"}})
            ["KeyMetadata"]["KeyId"] == b);
  CtlOk(box, {"update-alias", "--alias-name", "alias/ops/moving", "--target-key-id", b});
  CHECK(CtlOk(box, {"describe-key", "--key-id", "alias/ops/moving"})["KeyMetadata"]["KeyId"] ==
        b);
  CallOk(client, ipc::Op::kUpdateAlias, {{"AliasName", "alias/ops/moving"}, {"TargetKeyId", a}});
  CHECK(CallOk(client, ipc::Op::kDescribeKey, {{"KeyId", "alias/ops/moving"}})["KeyMetadata"]
                                                                               ["KeyId"] == a);
  CallOk(client, ipc::Op::kDeleteAlias, {{"AliasName", "alias/ops/moving"}});
  CtlOk(box, {"create-alias", "--alias-name", "alias/ops/tmp", "--target-key-id", a});
  CtlOk(box, {"delete-alias", "--alias-name", "alias/ops/tmp"});
  CHECK(CtlOk(box, {"list-aliases"})["Aliases"].size() == 2);

  // Disable / Enable both ways, through aliases.
  CallOk(client, ipc::Op::kDisableKey, {{"KeyId", "alias/ops/a"}});
  CHECK(CtlOk(box, {"describe-key", "--key-id", a})["KeyMetadata"]["KeyState"] == "Disabled");
  CtlOk(box, {"enable-key", "--key-id", "alias/ops/a"});
  CtlOk(box, {"disable-key", "--key-id", "alias/ops/b"});
  CallOk(client, ipc::Op::kEnableKey, {{"KeyId", b}});
  CHECK(CallOk(client, ipc::Op::kDescribeKey, {{"KeyId", b}})["KeyMetadata"]["Enabled"] == true);

  // ScheduleKeyDeletion / CancelKeyDeletion both ways (the key comes back Disabled, as AWS).
  json sched = CallOk(client, ipc::Op::kScheduleKeyDeletion,
                      {{"KeyId", "alias/ops/b"}, {"PendingWindowInDays", 7}});
  CHECK(sched["KeyId"] == b);
  CHECK(sched["KeyState"] == "PendingDeletion");
  CHECK(sched["PendingWindowInDays"] == 7);
  CHECK(sched["DeletionDate"].is_number());
  CHECK(CtlOk(box, {"describe-key", "--key-id", b})["KeyMetadata"]["DeletionDate"] ==
        sched["DeletionDate"]);
  CHECK(CtlOk(box, {"cancel-key-deletion", "--key-id", "alias/ops/b"})["KeyId"] == b);
  CHECK(CtlOk(box, {"describe-key", "--key-id", b})["KeyMetadata"]["KeyState"] == "Disabled");
  json sched2 = CtlOk(box, {"schedule-key-deletion", "--key-id", b});
  CHECK(sched2["PendingWindowInDays"] == 30);  // the default
  CHECK(CallOk(client, ipc::Op::kCancelKeyDeletion, {{"KeyId", b}})["KeyId"] == b);
  CallOk(client, ipc::Op::kEnableKey, {{"KeyId", b}});

  // Rotation: on demand, schedule on/off, status, list (both ways, through aliases).
  CHECK(CallOk(client, ipc::Op::kRotateKeyOnDemand, {{"KeyId", "alias/ops/a"}})["KeyId"] == a);
  CHECK(CtlOk(box, {"rotate-key-on-demand", "--key-id", a})["KeyId"] == a);
  json rot = CtlOk(box, {"list-key-rotations", "--key-id", "alias/ops/a"});
  REQUIRE(rot["Rotations"].size() == 2);
  CHECK(rot["Rotations"][0]["KeyVersion"] == 2);
  CHECK(rot["Rotations"][1]["KeyVersion"] == 3);
  CHECK(rot["Rotations"][1]["RotationType"] == "ON_DEMAND");
  CHECK(rot["Truncated"] == false);
  json page = CallOk(client, ipc::Op::kListKeyRotations, {{"KeyId", a}, {"Limit", 1}});
  REQUIRE(page["Rotations"].size() == 1);
  REQUIRE(page["Truncated"] == true);
  json page2 = CtlOk(box, {"list-key-rotations", "--key-id", a, "--limit", "1", "--marker",
                           page["NextMarker"].get<std::string>()});
  REQUIRE(page2["Rotations"].size() == 1);
  CHECK(page2["Rotations"][0]["KeyVersion"] == 3);
  CHECK(page2["Truncated"] == false);

  CallOk(client, ipc::Op::kEnableKeyRotation, {{"KeyId", "alias/ops/a"}});
  json rs = CtlOk(box, {"get-key-rotation-status", "--key-id", "alias/ops/a"});
  CHECK(rs["KeyRotationEnabled"] == true);
  CHECK(rs["RotationPeriodInDays"] == 365);
  CHECK(rs["NextRotationDate"].is_number());
  CtlOk(box, {"enable-key-rotation", "--key-id", b, "--rotation-period-in-days", "90"});
  CHECK(CallOk(client, ipc::Op::kGetKeyRotationStatus, {{"KeyId", b}})["RotationPeriodInDays"] ==
        90);
  CtlOk(box, {"disable-key-rotation", "--key-id", b});
  CallOk(client, ipc::Op::kDisableKeyRotation, {{"KeyId", a}});
  CHECK(CallOk(client, ipc::Op::kGetKeyRotationStatus, {{"KeyId", a}})["KeyRotationEnabled"] ==
        false);
  CHECK(CtlOk(box, {"get-key-rotation-status", "--key-id", b})["KeyRotationEnabled"] == false);

  // GenerateDataKey / WithoutPlaintext / Encrypt / Decrypt with the typed client and kmsctl.
  auto dk = client.GenerateDataKey("alias/ops/a", kContext);
  REQUIRE(dk.ok());
  CHECK(dk->key_id == a);
  CHECK(dk->plaintext.size() == 32);
  secrets.push_back(HexEncode(dk->plaintext.span()));
  auto peek = format::PeekWrappedBlobKey(dk->ciphertext_blob);
  REQUIRE(peek.ok());
  CHECK(peek->first == a);
  CHECK(peek->second == 3);  // the newest version
  auto ctl_dec = CtlOk(box, {"decrypt", "--ciphertext-blob", B64(dk->ciphertext_blob),
                             "--encryption-context", kCtx, "--key-id", "alias/ops/a"});
  CHECK(ctl_dec["KeyId"] == a);
  CHECK(Unb64(ctl_dec["Plaintext"].get<std::string>()) == Plain(dk->plaintext));

  json ctl_dk = CtlOk(box, {"generate-data-key", "--key-id", "alias/ops/b", "--key-spec",
                            "AES_128", "--encryption-context", kCtx});
  CHECK(Unb64(ctl_dk["Plaintext"].get<std::string>()).size() == 16);
  auto lib_dec = client.Decrypt(Unb64(ctl_dk["CiphertextBlob"].get<std::string>()), kContext);
  REQUIRE(lib_dec.ok());
  CHECK(lib_dec->key_id == b);
  CHECK(Plain(lib_dec->plaintext) == Unb64(ctl_dk["Plaintext"].get<std::string>()));
  json nbytes = CallOk(client, ipc::Op::kGenerateDataKey, {{"KeyId", b}, {"NumberOfBytes", 64}});
  CHECK(Unb64(nbytes["Plaintext"].get<std::string>()).size() == 64);
  CHECK(Unb64(CtlOk(box, {"generate-data-key", "--key-id", b, "--number-of-bytes",
                          "1"})["Plaintext"]
                  .get<std::string>())
            .size() == 1);

  json wop = CallOk(client, ipc::Op::kGenerateDataKeyWithoutPlaintext,
                    {{"KeyId", "alias/ops/a"}, {"KeySpec", "AES_256"}, {"EncryptionContext", {{"k", "v"}}}});
  CHECK_FALSE(wop.contains("Plaintext"));
  auto wop_dec = client.Decrypt(Unb64(wop["CiphertextBlob"].get<std::string>()), {{"k", "v"}});
  REQUIRE(wop_dec.ok());
  CHECK(wop_dec->plaintext.size() == 32);
  json ctl_wop = CtlOk(box, {"generate-data-key-without-plaintext", "--key-id", a});
  CHECK_FALSE(ctl_wop.contains("Plaintext"));
  CHECK(client.Decrypt(Unb64(ctl_wop["CiphertextBlob"].get<std::string>()), {}).ok());

  const std::string max_plain(4096, 'p');  // the largest Encrypt accepts
  auto enc = client.Encrypt("alias/ops/b", AsBytes(max_plain), kContext);
  REQUIRE(enc.ok());
  CHECK(enc->key_id == b);
  json ctl_dec2 = CtlOk(box, {"decrypt", "--ciphertext-blob", B64(enc->ciphertext_blob),
                              "--encryption-context", kCtx});
  CHECK(Unb64(ctl_dec2["Plaintext"].get<std::string>()) == Bytes(max_plain.begin(),
                                                                 max_plain.end()));
  json ctl_enc = CtlOk(box, {"encrypt", "--key-id", a, "--plaintext", B64(AsBytes("hello")),
                             "--encryption-context", kCtx});
  CHECK(ctl_enc["KeyId"] == a);
  CHECK(ctl_enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT");
  auto lib_dec2 = client.Decrypt(Unb64(ctl_enc["CiphertextBlob"].get<std::string>()), kContext);
  REQUIRE(lib_dec2.ok());
  CHECK(Plain(lib_dec2->plaintext) == Bytes{'h', 'e', 'l', 'l', 'o'});

  // PutKeyPolicy / GetKeyPolicy both ways: granting uid 1000 DescribeKey takes effect at once.
  const std::string policy = R"({"Version":"2012-10-17","Statement":[
    {"Sid":"Root","Effect":"Allow","Principal":{"Uid":0},"Action":"kms:*","Resource":"*"},
    {"Sid":"Describe","Effect":"Allow","Principal":{"Uid":1000},"Action":"kms:DescribeKey",
     "Resource":"*"}]})";
  json got = CtlOk(box, {"get-key-policy", "--key-id", a});
  CHECK(got["PolicyName"] == "default");
  CHECK(got["Policy"].get<std::string>().find("\"Uid\"") != std::string::npos);
  CallOk(client, ipc::Op::kPutKeyPolicy, {{"KeyId", "alias/ops/a"}, {"Policy", policy}});
  CHECK(CallOk(client, ipc::Op::kGetKeyPolicy, {{"KeyId", a}})["Policy"] == policy);
  std::ofstream(box.Path("policy.json")) << policy;
  CtlOk(box, {"put-key-policy", "--key-id", b, "--policy", "file://" + box.Path("policy.json")});
  CHECK(CtlOk(box, {"get-key-policy", "--key-id", "alias/ops/b"})["Policy"] == policy);
  RequireTool("setpriv");
  auto as_user = Run(AsUser(1000, 1000, {CtlBinary(), "--socket", box.socket_path(), "--output",
                                         "json", "describe-key", "--key-id", a}));
  INFO(as_user.err);
  CHECK(as_user.exit_code == 0);
  CHECK(AsUid1000([&] {
          ipc::KeydClient c(box.socket_path());
          return NameOf(c.Call(ipc::Op::kDescribeKey, {{"KeyId", b}}));
        }) == "");

  // ListKeys: every key, both ways.
  std::set<std::string> listed;
  const json all_keys = CallOk(client, ipc::Op::kListKeys, json::object());
  for (const auto& k : all_keys["Keys"]) {
    listed.insert(k["KeyId"].get<std::string>());
    CHECK(k["KeyArn"] == "arn:kmsfs:kms:local::key/" + k["KeyId"].get<std::string>());
  }
  CHECK(listed == std::set<std::string>{a, b});
  CHECK(CtlOk(box, {"list-keys"})["Keys"].size() == 2);

  CHECK(keyd->Stop() == 0);
  CheckLog(keyd->Log(), {}, secrets);
}

TEST_CASE("ListKeys and ListAliases paginate with --limit and NextMarker", "[keyd][ops]") {
  Sandbox box;
  auto keyd = box.StartKeyd();
  ipc::KeydClient client(box.socket_path());
  std::set<std::string> created;
  for (int i = 0; i < 5; ++i) {
    const std::string k = NewKey(box, "page " + std::to_string(i));
    created.insert(k);
    CtlOk(box, {"create-alias", "--alias-name", "alias/page/" + std::to_string(i),
                "--target-key-id", k});
  }

  // kmsctl, two at a time.
  std::set<std::string> seen;
  std::vector<std::string> marker_args;
  int pages = 0;
  for (;;) {
    std::vector<std::string> args = {"list-keys", "--limit", "2"};
    args.insert(args.end(), marker_args.begin(), marker_args.end());
    json p = CtlOk(box, args);
    ++pages;
    CHECK(p["Keys"].size() <= 2);
    for (const auto& k : p["Keys"]) CHECK(seen.insert(k["KeyId"].get<std::string>()).second);
    if (p["Truncated"] == false) {
      CHECK_FALSE(p.contains("NextMarker"));
      break;
    }
    REQUIRE(p["NextMarker"].is_string());
    marker_args = {"--marker", p["NextMarker"].get<std::string>()};
    REQUIRE(pages < 10);
  }
  CHECK(pages == 3);
  CHECK(seen == created);

  // The client library, aliases this time.
  std::set<std::string> alias_names;
  json params = {{"Limit", 2}};
  pages = 0;
  for (;;) {
    json p = CallOk(client, ipc::Op::kListAliases, params);
    ++pages;
    for (const auto& al : p["Aliases"]) {
      CHECK(alias_names.insert(al["AliasName"].get<std::string>()).second);
    }
    if (p["Truncated"] == false) break;
    params["Marker"] = p["NextMarker"];
    REQUIRE(pages < 10);
  }
  CHECK(pages == 3);
  CHECK(alias_names.size() == 5);

  // A marker that no listing returned is refused.
  ClientFails(client, ipc::Op::kListKeys, {{"Marker", "not-a-marker"}}, "ValidationException");
  CHECK(keyd->Stop() == 0);
}

TEST_CASE("every error case: its name through the client library, kmsctl's exit code and line",
          "[keyd][ops][errors]") {
  Sandbox box;
  auto keyd = box.StartKeyd(KeydArgs({"--min-pending-window-days", "7"}));
  ipc::KeydClient client(box.socket_path());
  const std::string key = NewKey(box, "good");
  const std::string other = NewKey(box, "other");
  const std::string disabled = NewKey(box, "disabled");
  const std::string pending = NewKey(box, "pending");
  CtlOk(box, {"create-alias", "--alias-name", "alias/err/good", "--target-key-id", key});
  CtlOk(box, {"create-alias", "--alias-name", "alias/err/disabled", "--target-key-id", disabled});

  auto dk = client.GenerateDataKey(key, kContext);
  REQUIRE(dk.ok());
  const Bytes blob = dk->ciphertext_blob;
  const std::string blob64 = B64(blob);
  auto dk_disabled = client.GenerateDataKey(disabled, kContext);
  auto dk_pending = client.GenerateDataKey(pending, kContext);
  REQUIRE(dk_disabled.ok());
  REQUIRE(dk_pending.ok());
  CtlOk(box, {"disable-key", "--key-id", disabled});
  CtlOk(box, {"schedule-key-deletion", "--key-id", pending, "--pending-window-in-days", "7"});
  const std::string unknown = "0123abcd-0000-4000-8000-000000000000";

  SECTION("NotFoundException: unknown key id, alias, ARN") {
    BothFail(box, client, ipc::Op::kDescribeKey, {{"KeyId", unknown}},
             {"describe-key", "--key-id", unknown}, "NotFoundException");
    BothFail(box, client, ipc::Op::kGenerateDataKey, {{"KeyId", "alias/err/none"}, {"KeySpec", "AES_256"}},
             {"generate-data-key", "--key-id", "alias/err/none"}, "NotFoundException");
    BothFail(box, client, ipc::Op::kEncrypt, {{"KeyId", unknown}, {"Plaintext", "aGk="}},
             {"encrypt", "--key-id", unknown, "--plaintext", "aGk="}, "NotFoundException");
    BothFail(box, client, ipc::Op::kDisableKey,
             {{"KeyId", "arn:kmsfs:kms:local::key/" + unknown}},
             {"disable-key", "--key-id", "arn:kmsfs:kms:local::key/" + unknown},
             "NotFoundException");
    BothFail(box, client, ipc::Op::kDeleteAlias, {{"AliasName", "alias/err/none"}},
             {"delete-alias", "--alias-name", "alias/err/none"}, "NotFoundException");
    BothFail(box, client, ipc::Op::kCreateAlias,
             {{"AliasName", "alias/err/new"}, {"TargetKeyId", unknown}},
             {"create-alias", "--alias-name", "alias/err/new", "--target-key-id", unknown},
             "NotFoundException");
    BothFail(box, client, ipc::Op::kListKeyRotations, {{"KeyId", "alias/err/none"}},
             {"list-key-rotations", "--key-id", "alias/err/none"}, "NotFoundException");
    BothFail(box, client, ipc::Op::kReEncrypt,
             {{"CiphertextBlob", blob64},
              {"SourceEncryptionContext", kContext},
              {"DestinationKeyId", "alias/err/none"}},
             {"re-encrypt", "--ciphertext-blob", blob64, "--source-encryption-context", kCtx,
              "--destination-key-id", "alias/err/none"},
             "NotFoundException");
  }

  SECTION("DisabledException: every use of a disabled key, and its rotation ops") {
    for (const std::string& id : {disabled, std::string("alias/err/disabled")}) {
      BothFail(box, client, ipc::Op::kGenerateDataKey, {{"KeyId", id}, {"KeySpec", "AES_256"}},
               {"generate-data-key", "--key-id", id}, "DisabledException");
      BothFail(box, client, ipc::Op::kGenerateDataKeyWithoutPlaintext, {{"KeyId", id}, {"KeySpec", "AES_256"}},
               {"generate-data-key-without-plaintext", "--key-id", id}, "DisabledException");
      BothFail(box, client, ipc::Op::kEncrypt, {{"KeyId", id}, {"Plaintext", "aGk="}},
               {"encrypt", "--key-id", id, "--plaintext", "aGk="}, "DisabledException");
      BothFail(box, client, ipc::Op::kRotateKeyOnDemand, {{"KeyId", id}},
               {"rotate-key-on-demand", "--key-id", id}, "DisabledException");
      BothFail(box, client, ipc::Op::kEnableKeyRotation, {{"KeyId", id}},
               {"enable-key-rotation", "--key-id", id}, "DisabledException");
    }
    const std::string b64 = B64(dk_disabled->ciphertext_blob);
    BothFail(box, client, ipc::Op::kDecrypt,
             {{"CiphertextBlob", b64}, {"EncryptionContext", kContext}},
             {"decrypt", "--ciphertext-blob", b64, "--encryption-context", kCtx},
             "DisabledException");
    // ReEncrypt from a disabled key, and to one.
    BothFail(box, client, ipc::Op::kReEncrypt,
             {{"CiphertextBlob", b64},
              {"SourceEncryptionContext", kContext},
              {"DestinationKeyId", key}},
             {"re-encrypt", "--ciphertext-blob", b64, "--source-encryption-context", kCtx,
              "--destination-key-id", key},
             "DisabledException");
    BothFail(box, client, ipc::Op::kReEncrypt,
             {{"CiphertextBlob", blob64},
              {"SourceEncryptionContext", kContext},
              {"DestinationKeyId", disabled}},
             {"re-encrypt", "--ciphertext-blob", blob64, "--source-encryption-context", kCtx,
              "--destination-key-id", disabled},
             "DisabledException");
    // Still described, and enabling it lifts all of it.
    CHECK(CtlOk(box, {"describe-key", "--key-id", disabled})["KeyMetadata"]["KeyState"] ==
          "Disabled");
    CtlOk(box, {"enable-key", "--key-id", disabled});
    CHECK(client.Decrypt(dk_disabled->ciphertext_blob, kContext).ok());
  }

  SECTION("KMSInvalidStateException: a key pending deletion; cancelling a key not pending") {
    const std::string b64 = B64(dk_pending->ciphertext_blob);
    BothFail(box, client, ipc::Op::kGenerateDataKey, {{"KeyId", pending}, {"KeySpec", "AES_256"}},
             {"generate-data-key", "--key-id", pending}, "KMSInvalidStateException");
    BothFail(box, client, ipc::Op::kEncrypt, {{"KeyId", pending}, {"Plaintext", "aGk="}},
             {"encrypt", "--key-id", pending, "--plaintext", "aGk="},
             "KMSInvalidStateException");
    BothFail(box, client, ipc::Op::kDecrypt,
             {{"CiphertextBlob", b64}, {"EncryptionContext", kContext}},
             {"decrypt", "--ciphertext-blob", b64, "--encryption-context", kCtx},
             "KMSInvalidStateException");
    BothFail(box, client, ipc::Op::kEnableKey, {{"KeyId", pending}},
             {"enable-key", "--key-id", pending}, "KMSInvalidStateException");
    BothFail(box, client, ipc::Op::kDisableKey, {{"KeyId", pending}},
             {"disable-key", "--key-id", pending}, "KMSInvalidStateException");
    BothFail(box, client, ipc::Op::kRotateKeyOnDemand, {{"KeyId", pending}},
             {"rotate-key-on-demand", "--key-id", pending}, "KMSInvalidStateException");
    BothFail(box, client, ipc::Op::kScheduleKeyDeletion, {{"KeyId", pending}},
             {"schedule-key-deletion", "--key-id", pending}, "KMSInvalidStateException");
    BothFail(box, client, ipc::Op::kCancelKeyDeletion, {{"KeyId", key}},
             {"cancel-key-deletion", "--key-id", key}, "KMSInvalidStateException");
    // Read-only operations still work in that state.
    CHECK(CtlOk(box, {"describe-key", "--key-id", pending})["KeyMetadata"]["KeyState"] ==
          "PendingDeletion");
    CtlOk(box, {"get-key-rotation-status", "--key-id", pending});
    CtlOk(box, {"list-key-rotations", "--key-id", pending});
    CtlOk(box, {"get-key-policy", "--key-id", pending});
  }

  SECTION("InvalidCiphertextException: flipped byte, wrong or missing context, garbage") {
    for (size_t at : {size_t{0}, blob.size() / 2, blob.size() - 1}) {
      Bytes flipped = blob;
      flipped[at] ^= 0x01;
      const std::string f64 = B64(flipped);
      INFO("byte " << at << " of " << blob.size() << " flipped");
      // A flipped key-id byte may name a key that does not exist: README says NotFound then.
      auto peek = format::PeekWrappedBlobKey(flipped);
      const bool names_other_key = peek.ok() && peek->first != key;
      const std::string expected =
          names_other_key ? "NotFoundException" : "InvalidCiphertextException";
      BothFail(box, client, ipc::Op::kDecrypt,
               {{"CiphertextBlob", f64}, {"EncryptionContext", kContext}},
               {"decrypt", "--ciphertext-blob", f64, "--encryption-context", kCtx}, expected);
    }
    // The typed helper says the same.
    Bytes flipped = blob;
    flipped[blob.size() - 1] ^= 0x80;
    auto typed = client.Decrypt(flipped, kContext);
    REQUIRE_FALSE(typed.ok());
    CHECK(ipc::ErrorNameOf(typed.error()) == "InvalidCiphertextException");
    CHECK(typed.error().code() == Code::kCorrupt);

    BothFail(box, client, ipc::Op::kDecrypt,
             {{"CiphertextBlob", blob64},
              {"EncryptionContext", {{"kmsfs:volume", "ops"}, {"kmsfs:file", "f2"}}}},
             {"decrypt", "--ciphertext-blob", blob64, "--encryption-context",
              "kmsfs:volume=ops,kmsfs:file=f2"},
             "InvalidCiphertextException");
    BothFail(box, client, ipc::Op::kDecrypt, {{"CiphertextBlob", blob64}},
             {"decrypt", "--ciphertext-blob", blob64}, "InvalidCiphertextException");
    BothFail(box, client, ipc::Op::kReEncrypt,
             {{"CiphertextBlob", blob64},
              {"SourceEncryptionContext", {{"x", "y"}}},
              {"DestinationKeyId", other}},
             {"re-encrypt", "--ciphertext-blob", blob64, "--source-encryption-context", "x=y",
              "--destination-key-id", other},
             "InvalidCiphertextException");
    const std::string garbage = B64(AsBytes("definitely not a wrapped blob"));
    BothFail(box, client, ipc::Op::kDecrypt, {{"CiphertextBlob", garbage}},
             {"decrypt", "--ciphertext-blob", garbage}, "InvalidCiphertextException");
    const std::string truncated = B64(Bytes(blob.begin(), blob.end() - 1));
    BothFail(box, client, ipc::Op::kDecrypt,
             {{"CiphertextBlob", truncated}, {"EncryptionContext", kContext}},
             {"decrypt", "--ciphertext-blob", truncated, "--encryption-context", kCtx},
             "InvalidCiphertextException");
    // Not base64 at all: keyd says InvalidCiphertext; kmsctl refuses it before sending (usage).
    ClientFails(client, ipc::Op::kDecrypt, {{"CiphertextBlob", "!!not base64!!"}},
                "InvalidCiphertextException");
    CHECK(box.Ctl({"decrypt", "--ciphertext-blob", "!!not base64!!"}).exit_code == 2);
  }

  SECTION("IncorrectKeyException: Decrypt's KeyId or ReEncrypt's SourceKeyId is another key") {
    BothFail(box, client, ipc::Op::kDecrypt,
             {{"CiphertextBlob", blob64}, {"EncryptionContext", kContext}, {"KeyId", other}},
             {"decrypt", "--ciphertext-blob", blob64, "--encryption-context", kCtx, "--key-id",
              other},
             "IncorrectKeyException");
    CtlOk(box, {"create-alias", "--alias-name", "alias/err/other", "--target-key-id", other});
    BothFail(box, client, ipc::Op::kDecrypt,
             {{"CiphertextBlob", blob64},
              {"EncryptionContext", kContext},
              {"KeyId", "alias/err/other"}},
             {"decrypt", "--ciphertext-blob", blob64, "--encryption-context", kCtx, "--key-id",
              "alias/err/other"},
             "IncorrectKeyException");
    BothFail(box, client, ipc::Op::kReEncrypt,
             {{"CiphertextBlob", blob64},
              {"SourceEncryptionContext", kContext},
              {"SourceKeyId", other},
              {"DestinationKeyId", key}},
             {"re-encrypt", "--ciphertext-blob", blob64, "--source-encryption-context", kCtx,
              "--source-key-id", other, "--destination-key-id", key},
             "IncorrectKeyException");
    // The right KeyId (by alias) is accepted.
    CtlOk(box, {"decrypt", "--ciphertext-blob", blob64, "--encryption-context", kCtx,
                "--key-id", "alias/err/good"});
  }

  SECTION("AccessDeniedException: uid 1000 on root-only keys, CreateKey and Backup") {
    RequireTool("setpriv");
    auto as_user = [&](std::vector<std::string> args) {
      std::vector<std::string> argv = {CtlBinary(), "--socket", box.socket_path(), "--output",
                                       "json"};
      argv.insert(argv.end(), args.begin(), args.end());
      return Run(AsUser(1000, 1000, argv));
    };
    CtlFails(as_user({"describe-key", "--key-id", key}), "AccessDeniedException", "describe-key");
    CtlFails(as_user({"generate-data-key", "--key-id", "alias/err/good"}),
             "AccessDeniedException", "generate-data-key");
    CtlFails(as_user({"decrypt", "--ciphertext-blob", blob64, "--encryption-context", kCtx}),
             "AccessDeniedException", "decrypt");
    CtlFails(as_user({"encrypt", "--key-id", key, "--plaintext", "aGk="}), "AccessDeniedException",
             "encrypt");
    CtlFails(as_user({"disable-key", "--key-id", key}), "AccessDeniedException", "disable-key");
    CtlFails(as_user({"schedule-key-deletion", "--key-id", key}), "AccessDeniedException",
             "schedule-key-deletion");
    CtlFails(as_user({"put-key-policy", "--key-id", key, "--policy", R"({"Statement":[]})"}),
             "AccessDeniedException", "put-key-policy");
    CtlFails(as_user({"create-alias", "--alias-name", "alias/err/mine", "--target-key-id", key}),
             "AccessDeniedException", "create-alias");
    CtlFails(as_user({"create-key"}), "AccessDeniedException", "create-key");
    CtlFails(as_user({"backup", box.Path("user-backup.mdb")}), "AccessDeniedException", "backup");
    // The client library as uid 1000 gets the same answers.
    CHECK(AsUid1000([&] {
            ipc::KeydClient c(box.socket_path());
            return NameOf(c.Call(ipc::Op::kDescribeKey, {{"KeyId", key}}));
          }) == "AccessDeniedException");
    CHECK(AsUid1000([&] {
            ipc::KeydClient c(box.socket_path());
            auto r = c.Decrypt(blob, kContext);
            return r.ok() ? std::string() : std::string(ipc::ErrorNameOf(r.error()));
          }) == "AccessDeniedException");
    CHECK(AsUid1000([&] {
            ipc::KeydClient c(box.socket_path());
            return NameOf(c.Call(ipc::Op::kCreateKey, json::object()));
          }) == "AccessDeniedException");
    // Listing is open to every local user.
    auto list = as_user({"list-keys"});
    CHECK(list.exit_code == 0);
    // Nothing changed.
    CHECK(CtlOk(box, {"describe-key", "--key-id", key})["KeyMetadata"]["KeyState"] == "Enabled");
    CHECK(CtlOk(box, {"list-aliases", "--key-id", key})["Aliases"].size() == 1);
  }

  SECTION("ValidationException: out-of-range and malformed parameters") {
    for (const char* days : {"6", "31"}) {
      BothFail(box, client, ipc::Op::kScheduleKeyDeletion,
               {{"KeyId", key}, {"PendingWindowInDays", std::stoi(days)}},
               {"schedule-key-deletion", "--key-id", key, "--pending-window-in-days", days},
               "ValidationException");
    }
    // 0 is refused by keyd; kmsctl refuses it itself first (a usage error: exit 2, nothing sent).
    ClientFails(client, ipc::Op::kScheduleKeyDeletion, {{"KeyId", key}, {"PendingWindowInDays", 0}},
                "ValidationException");
    CHECK(box.Ctl({"schedule-key-deletion", "--key-id", key, "--pending-window-in-days", "0"})
              .exit_code == 2);
    CHECK(CtlOk(box, {"describe-key", "--key-id", key})["KeyMetadata"]["KeyState"] == "Enabled");
    for (const char* days : {"89", "2561"}) {
      BothFail(box, client, ipc::Op::kEnableKeyRotation,
               {{"KeyId", key}, {"RotationPeriodInDays", std::stoi(days)}},
               {"enable-key-rotation", "--key-id", key, "--rotation-period-in-days", days},
               "ValidationException");
    }
    // Plaintext over 4096 bytes.
    const std::string big(4097, 'x');
    {
      std::ofstream f(box.Path("big.bin"), std::ios::binary);
      f << big;
    }
    BothFail(box, client, ipc::Op::kEncrypt, {{"KeyId", key}, {"Plaintext", B64(AsBytes(big))}},
             {"encrypt", "--key-id", key, "--plaintext", "fileb://" + box.Path("big.bin")},
             "ValidationException");
    auto typed = client.Encrypt(key, AsBytes(big), {});
    REQUIRE_FALSE(typed.ok());
    CHECK(ipc::ErrorNameOf(typed.error()) == "ValidationException");
    // Bad alias names.
    for (const std::string& name :
         {std::string("alias/has space"), std::string("noprefix"), std::string("alias/"),
          std::string("alias/aws/reserved"), std::string("alias/") + std::string(251, 'a'),
          std::string("alias/bad!char")}) {
      BothFail(box, client, ipc::Op::kCreateAlias, {{"AliasName", name}, {"TargetKeyId", key}},
               {"create-alias", "--alias-name", name, "--target-key-id", key},
               "ValidationException");
    }
    // An alias is not a valid TargetKeyId.
    BothFail(box, client, ipc::Op::kCreateAlias,
             {{"AliasName", "alias/err/chain"}, {"TargetKeyId", "alias/err/good"}},
             {"create-alias", "--alias-name", "alias/err/chain", "--target-key-id",
              "alias/err/good"},
             "ValidationException");
    // Bad key id syntax, bad data key sizes, unknown fields, Limit out of range.
    BothFail(box, client, ipc::Op::kDescribeKey, {{"KeyId", "not a key id"}},
             {"describe-key", "--key-id", "not a key id"}, "ValidationException");
    BothFail(box, client, ipc::Op::kGenerateDataKey, {{"KeyId", key}, {"NumberOfBytes", 1025}},
             {"generate-data-key", "--key-id", key, "--number-of-bytes", "1025"},
             "ValidationException");
    ClientFails(client, ipc::Op::kGenerateDataKey, {{"KeyId", key}, {"NumberOfBytes", 0}},
                "ValidationException");
    CHECK(box.Ctl({"generate-data-key", "--key-id", key, "--number-of-bytes", "0"}).exit_code ==
          2);  // refused by kmsctl itself
    BothFail(box, client, ipc::Op::kListKeys, {{"Limit", 1001}}, {"list-keys", "--limit", "1001"},
             "ValidationException");
    ClientFails(client, ipc::Op::kDescribeKey, {{"KeyId", key}, {"GrantTokens", json::array()}},
                "ValidationException");
    ClientFails(client, ipc::Op::kDescribeKey, json::object(), "ValidationException");
    ClientFails(client, ipc::Op::kEncrypt, {{"KeyId", key}, {"Plaintext", ""}},
                "ValidationException");
    BothFail(box, client, ipc::Op::kPutKeyPolicy, {{"KeyId", key}, {"Policy", "{not json"}},
             {"put-key-policy", "--key-id", key, "--policy", "{not json"},
             "ValidationException");
    // A policy that would lock root out is refused unless bypassed (the lockout check).
    const std::string lockout =
        R"({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Uid":1000},)"
        R"("Action":"kms:Decrypt","Resource":"*"}]})";
    BothFail(box, client, ipc::Op::kPutKeyPolicy, {{"KeyId", key}, {"Policy", lockout}},
             {"put-key-policy", "--key-id", key, "--policy", lockout}, "ValidationException");
  }

  SECTION("AlreadyExistsException: a taken alias name, an existing backup file") {
    BothFail(box, client, ipc::Op::kCreateAlias,
             {{"AliasName", "alias/err/good"}, {"TargetKeyId", other}},
             {"create-alias", "--alias-name", "alias/err/good", "--target-key-id", other},
             "AlreadyExistsException");
    CHECK(CtlOk(box, {"describe-key", "--key-id", "alias/err/good"})["KeyMetadata"]["KeyId"] ==
          key);  // unchanged
    std::ofstream(box.Path("exists.mdb")) << "x";
    BothFail(box, client, ipc::Op::kBackup, {{"Path", box.Path("exists.mdb")}},
             {"backup", box.Path("exists.mdb")}, "AlreadyExistsException");
  }

  CHECK(keyd->Stop() == 0);
  // Denials and refusals may be logged at warning level; nothing else, and never a secret.
  CheckLog(keyd->Log(), {"AccessDenied", "denied", "lockout", "Validation"},
           {box.root_key_hex(), HexEncode(dk->plaintext.span())});
}

TEST_CASE("ReEncrypt moves a blob to another key and to the newest version", "[keyd][ops]") {
  Sandbox box;
  auto keyd = box.StartKeyd();
  ipc::KeydClient client(box.socket_path());
  const std::string src = NewKey(box, "source");
  const std::string dst = NewKey(box, "destination");
  CtlOk(box, {"create-alias", "--alias-name", "alias/re/dst", "--target-key-id", dst});
  CtlOk(box, {"create-alias", "--alias-name", "alias/re/src", "--target-key-id", src});

  auto dk = client.GenerateDataKey(src, kContext);
  REQUIRE(dk.ok());
  const Bytes plain = Plain(dk->plaintext);

  SECTION("to another key, with a new context (client library)") {
    const ipc::EncryptionContext new_ctx = {{"kmsfs:volume", "other"}};
    auto re = client.ReEncrypt(dk->ciphertext_blob, kContext, "alias/re/dst", new_ctx);
    INFO((re.ok() ? std::string("ok") : re.error().ToString()));
    REQUIRE(re.ok());
    CHECK(re->source_key_id == src);
    CHECK(re->key_id == dst);
    CHECK(format::PeekWrappedBlobKey(re->ciphertext_blob)->first == dst);
    auto d = client.Decrypt(re->ciphertext_blob, new_ctx);
    REQUIRE(d.ok());
    CHECK(d->key_id == dst);
    CHECK(Plain(d->plaintext) == plain);
    CHECK_FALSE(client.Decrypt(re->ciphertext_blob, kContext).ok());  // old context is gone
    CHECK(client.Decrypt(dk->ciphertext_blob, kContext).ok());        // the source blob stays
  }
  SECTION("to another key (kmsctl, SourceKeyId by alias)") {
    json re = CtlOk(box, {"re-encrypt", "--ciphertext-blob", B64(dk->ciphertext_blob),
                          "--source-encryption-context", kCtx, "--destination-encryption-context",
                          kCtx, "--source-key-id", "alias/re/src", "--destination-key-id", dst});
    CHECK(re["SourceKeyId"] == src);
    CHECK(re["KeyId"] == dst);
    CHECK(re["SourceKeyVersion"] == 1);
    CHECK(re["KeyVersion"] == 1);
    CHECK_FALSE(re.contains("Plaintext"));  // the plaintext never leaves keyd
    json d = CtlOk(box, {"decrypt", "--ciphertext-blob", re["CiphertextBlob"].get<std::string>(),
                         "--encryption-context", kCtx});
    CHECK(d["KeyId"] == dst);
    CHECK(Unb64(d["Plaintext"].get<std::string>()) == plain);
  }
  SECTION("to the newest version of the same key") {
    CtlOk(box, {"rotate-key-on-demand", "--key-id", src});
    CallOk(client, ipc::Op::kRotateKeyOnDemand, {{"KeyId", src}});
    json re = CtlOk(box, {"re-encrypt", "--ciphertext-blob", B64(dk->ciphertext_blob),
                          "--source-encryption-context", kCtx, "--destination-encryption-context",
                          kCtx, "--destination-key-id", "alias/re/src"});
    CHECK(re["SourceKeyId"] == src);
    CHECK(re["KeyId"] == src);
    CHECK(re["SourceKeyVersion"] == 1);
    CHECK(re["KeyVersion"] == 3);
    const Bytes moved = Unb64(re["CiphertextBlob"].get<std::string>());
    CHECK(format::PeekWrappedBlobKey(moved)->second == 3);
    auto lib = client.ReEncrypt(moved, kContext, src, kContext);
    REQUIRE(lib.ok());
    CHECK(format::PeekWrappedBlobKey(lib->ciphertext_blob)->second == 3);
    for (const Bytes& b : {dk->ciphertext_blob, moved, lib->ciphertext_blob}) {
      auto d = client.Decrypt(b, kContext);
      REQUIRE(d.ok());
      CHECK(Plain(d->plaintext) == plain);
    }
  }
  CHECK(keyd->Stop() == 0);
  CheckLog(keyd->Log(), {}, {box.root_key_hex(), HexEncode(plain)});
}

TEST_CASE("kmsctl backup restores: keyd on the copy serves the same keys and old blobs",
          "[keyd][ops][backup]") {
  Sandbox box;
  ipc::KeydClient client(box.socket_path());
  std::string a;
  std::string b;
  Bytes blob_a;
  Bytes blob_b;
  Bytes plain_a;
  Bytes plain_b;
  json before;
  const std::string backup = box.Path("backup.mdb");
  {
    auto keyd = box.StartKeyd();
    a = NewKey(box, "backed up a");
    b = NewKey(box, "backed up b");
    CtlOk(box, {"create-alias", "--alias-name", "alias/bk/a", "--target-key-id", a});
    auto dk = client.GenerateDataKey(a, kContext);
    REQUIRE(dk.ok());
    blob_a = dk->ciphertext_blob;
    plain_a = Plain(dk->plaintext);
    CtlOk(box, {"rotate-key-on-demand", "--key-id", a});
    CtlOk(box, {"enable-key-rotation", "--key-id", a, "--rotation-period-in-days", "120"});
    CtlOk(box, {"disable-key", "--key-id", b});
    before = {{"a", CtlOk(box, {"describe-key", "--key-id", a})},
              {"b", CtlOk(box, {"describe-key", "--key-id", b})},
              {"rot", CtlOk(box, {"list-key-rotations", "--key-id", a})},
              {"status", CtlOk(box, {"get-key-rotation-status", "--key-id", a})},
              {"aliases", CtlOk(box, {"list-aliases"})}};

    // The backup, through the client library this time (kmsctl_test.cc uses kmsctl).
    json r = CallOk(client, ipc::Op::kBackup, {{"Path", backup}});
    CHECK(r["Path"] == backup);

    // Changes after the backup are not in it.
    const std::string later = NewKey(box, "after the backup");
    auto dk_later = client.GenerateDataKey(later, kContext);
    REQUIRE(dk_later.ok());
    blob_b = dk_later->ciphertext_blob;
    plain_b = Plain(dk_later->plaintext);
    CHECK(keyd->Stop() == 0);
  }

  // Restore as documented (KeyStore::Backup): a fresh 0700 dir holding the file as data.mdb.
  const std::string restored = box.Path("restored");
  REQUIRE(::mkdir(restored.c_str(), 0700) == 0);
  REQUIRE(::rename(backup.c_str(), (restored + "/data.mdb").c_str()) == 0);
  REQUIRE(::chmod((restored + "/data.mdb").c_str(), 0600) == 0);
  const std::string socket = box.Path("restored.sock");
  Keyd keyd(box.root(), 50, restored, socket, box.root_key_file(), Keyd::Options{});
  auto ctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {CtlBinary(), "--socket", socket, "--output", "json"};
    argv.insert(argv.end(), args.begin(), args.end());
    return Run(argv);
  };
  auto ok = [&](std::vector<std::string> args) {
    auto r = ctl(args);
    INFO("kmsctl " << args[0] << ": " << r.err);
    REQUIRE(r.exit_code == 0);
    return r.json;
  };
  json after = {{"a", ok({"describe-key", "--key-id", a})},
                {"b", ok({"describe-key", "--key-id", b})},
                {"rot", ok({"list-key-rotations", "--key-id", a})},
                {"status", ok({"get-key-rotation-status", "--key-id", a})},
                {"aliases", ok({"list-aliases"})}};
  CHECK(after == before);
  CHECK(ok({"list-keys"})["Keys"].size() == 2);

  ipc::KeydClient restored_client(socket);
  auto d = restored_client.Decrypt(blob_a, kContext);
  INFO((d.ok() ? std::string("ok") : d.error().ToString()));
  REQUIRE(d.ok());
  CHECK(Plain(d->plaintext) == plain_a);
  json d2 = ok({"decrypt", "--ciphertext-blob", B64(blob_a), "--encryption-context", kCtx,
                "--key-id", "alias/bk/a"});
  CHECK(Unb64(d2["Plaintext"].get<std::string>()) == plain_a);
  // New data keys on the restored state use the newest backed-up version.
  auto fresh = restored_client.GenerateDataKey("alias/bk/a", kContext);
  REQUIRE(fresh.ok());
  CHECK(format::PeekWrappedBlobKey(fresh->ciphertext_blob)->second == 2);
  // A blob under a key made after the backup names a key this keyd never had.
  auto gone = restored_client.Decrypt(blob_b, kContext);
  REQUIRE_FALSE(gone.ok());
  CHECK(ipc::ErrorNameOf(gone.error()) == "NotFoundException");
  CtlFails(ctl({"decrypt", "--ciphertext-blob", B64(blob_b), "--encryption-context", kCtx}),
           "NotFoundException", "decrypt");
  // The restored state is a working store: changes stick.
  ok({"enable-key", "--key-id", b});
  CHECK(ok({"describe-key", "--key-id", b})["KeyMetadata"]["KeyState"] == "Enabled");

  // A different root key is refused on the copy, as on the original.
  CHECK(keyd.Stop() == 0);
  box.MakeKeyFile(box.Path("other.key"));
  Keyd wrong(box.root(), 51, restored, socket, box.Path("other.key"), NoWait(Keyd::Options{}));
  CHECK(wrong.WaitExit(std::chrono::milliseconds(20'000)) == 3);
  CheckLog(keyd.Log(), {}, {box.root_key_hex(), HexEncode(plain_a), HexEncode(plain_b)});
}

}  // namespace
}  // namespace kmsfs::it
