// KmsService control plane: keys, aliases, key state, policies, Ping/Status/Backup.
#include <sys/stat.h>

#include <filesystem>
#include <set>

#include "keyd/policy/policy.h"
#include "tests/unit/keyd/service/service_test_util.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

using testing::Alice;
using testing::Bob;
using testing::Harness;
using testing::Root;
using testing::SinkKind;

TEST_CASE("CreateKey returns AWS-shaped KeyMetadata", "[service][keys]") {
  Harness h;
  json r = h.Ok("CreateKey", {{"Description", "volumes"},
                              {"Tags", {{{"TagKey", "team"}, {"TagValue", "ops"}}}},
                              {"KeySpec", "SYMMETRIC_DEFAULT"},
                              {"KeyUsage", "ENCRYPT_DECRYPT"}});
  const json& m = r["KeyMetadata"];
  const std::string id = m["KeyId"];
  CHECK(IsValidKeyId(id));
  CHECK(m["Arn"] == "arn:kmsfs:kms:local::key/" + id);
  CHECK(m["Description"] == "volumes");
  CHECK(m["Enabled"] == true);
  CHECK(m["KeyState"] == "Enabled");
  CHECK(m["KeyUsage"] == "ENCRYPT_DECRYPT");
  CHECK(m["KeySpec"] == "SYMMETRIC_DEFAULT");
  CHECK(m["CreationDate"] == h.clock.now.load());
  CHECK(m["EncryptionAlgorithms"] == json::array({"SYMMETRIC_DEFAULT"}));
  CHECK_FALSE(m.contains("DeletionDate"));
  // The default policy: root only.
  CHECK(h.Ok("GetKeyPolicy", {{"KeyId", id}})["Policy"] == DefaultKeyPolicy());

  auto rec = h.LastAudit();
  CHECK(rec.operation == "CreateKey");
  CHECK(rec.key_id == id);
  CHECK(rec.key_version == 1);
  CHECK(rec.outcome == "Success");
  CHECK(rec.decision == "Allow");
}

TEST_CASE("CreateKey errors", "[service][keys]") {
  Harness h;
  SECTION("only uid 0 may create keys, and the denial is audited") {
    std::string msg = h.Fails("CreateKey", json::object(), "AccessDeniedException", Alice());
    CHECK(msg.find("uid 1000") != std::string::npos);
    auto rec = h.LastAudit();
    CHECK(rec.operation == "CreateKey");
    CHECK(rec.decision == "Deny");
    CHECK(rec.outcome == "AccessDeniedException");
    CHECK(rec.principal.uid == 1000);
  }
  SECTION("bad and unsupported parameters") {
    h.Fails("CreateKey", {{"Description", 5}}, "ValidationException");
    h.Fails("CreateKey", {{"Description", std::string(8193, 'x')}}, "ValidationException");
    h.Fails("CreateKey", {{"Bogus", 1}}, "ValidationException");
    h.Fails("CreateKey", {{"Tags", "x"}}, "ValidationException");
    h.Fails("CreateKey", {{"KeySpec", "RSA_2048"}}, "UnsupportedOperationException");
    h.Fails("CreateKey", {{"KeyUsage", "SIGN_VERIFY"}}, "UnsupportedOperationException");
    h.Fails("CreateKey", {{"Origin", "EXTERNAL"}}, "UnsupportedOperationException");
    h.Fails("CreateKey", {{"MultiRegion", true}}, "UnsupportedOperationException");
    std::string msg = h.Fails("CreateKey", {{"Policy", "{not json"}}, "ValidationException");
    CHECK(msg.find("Policy") != std::string::npos);
  }
  SECTION("a policy that locks the creator out needs the bypass flag") {
    const std::string alice_only = R"({"Version":"2012-10-17","Statement":[
      {"Sid":"A","Effect":"Allow","Principal":{"Uid":1000},"Action":"kms:*","Resource":"*"}]})";
    std::string msg = h.Fails("CreateKey", {{"Policy", alice_only}}, "ValidationException");
    CHECK(msg.find("BypassPolicyLockoutSafetyCheck") != std::string::npos);
    h.Ok("CreateKey", {{"Policy", alice_only}, {"BypassPolicyLockoutSafetyCheck", true}});
  }
}

TEST_CASE("DescribeKey by id, alias and ARN; NotFound and Validation", "[service][keys]") {
  Harness h;
  const std::string id = h.CreateKey();
  h.Ok("CreateAlias", {{"AliasName", "alias/vol"}, {"TargetKeyId", id}});
  for (std::string ref : {id, std::string("alias/vol"), "arn:kmsfs:kms:local::key/" + id,
                          std::string("arn:kmsfs:kms:local::alias/vol")}) {
    CAPTURE(ref);
    CHECK(h.Ok("DescribeKey", {{"KeyId", ref}})["KeyMetadata"]["KeyId"] == id);
  }
  h.Fails("DescribeKey", {{"KeyId", "11111111-2222-4333-8444-555555555555"}}, "NotFoundException");
  h.Fails("DescribeKey", {{"KeyId", "alias/nope"}}, "NotFoundException");
  h.Fails("DescribeKey", {{"KeyId", "not a key"}}, "ValidationException");
  h.Fails("DescribeKey", json::object(), "ValidationException");
  h.Fails("DescribeKey", {{"KeyId", 7}}, "ValidationException");
  SECTION("the default policy denies other users, and the denial is audited") {
    const size_t before = h.Audit().size();
    h.Fails("DescribeKey", {{"KeyId", id}}, "AccessDeniedException", Alice());
    REQUIRE(h.Audit().size() == before + 1);
    CHECK(h.LastAudit().operation == "DescribeKey");
    CHECK(h.LastAudit().decision == "Deny");
    // A successful read is not audited.
    h.Ok("DescribeKey", {{"KeyId", id}});
    CHECK(h.Audit().size() == before + 1);
  }
}

TEST_CASE("ListKeys pages with Limit and Marker", "[service][keys]") {
  Harness h;
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.insert(h.CreateKey());
  std::set<std::string> seen;
  json params = {{"Limit", 2}};
  int pages = 0;
  while (true) {
    json r = h.Ok("ListKeys", params, Alice());  // not per-key: any local user may list
    ++pages;
    for (const json& k : r["Keys"]) {
      seen.insert(k["KeyId"].get<std::string>());
      CHECK(k["KeyArn"] == KeyArn(k["KeyId"].get<std::string>()));
    }
    if (!r["Truncated"].get<bool>()) {
      CHECK_FALSE(r.contains("NextMarker"));
      break;
    }
    params["Marker"] = r["NextMarker"];
  }
  CHECK(seen == ids);
  CHECK(pages == 3);
  h.Fails("ListKeys", {{"Limit", 0}}, "ValidationException");
  h.Fails("ListKeys", {{"Limit", 1001}}, "ValidationException");
  h.Fails("ListKeys", {{"Limit", 1.5}}, "ValidationException");
  h.Fails("ListKeys", {{"Marker", "garbage"}}, "ValidationException");
}

TEST_CASE("EnableKey and DisableKey", "[service][keys]") {
  Harness h;
  const std::string id = h.CreateKey();
  h.Ok("DisableKey", {{"KeyId", id}});
  json m = h.Ok("DescribeKey", {{"KeyId", id}})["KeyMetadata"];
  CHECK(m["KeyState"] == "Disabled");
  CHECK(m["Enabled"] == false);
  CHECK(h.LastAudit().operation == "DisableKey");
  CHECK(h.LastAudit().outcome == "Success");
  std::string msg =
      h.Fails("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}}, "DisabledException");
  CHECK(msg.find("EnableKey") != std::string::npos);
  h.Ok("EnableKey", {{"KeyId", id}});
  h.Ok("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}});
  h.Ok("EnableKey", {{"KeyId", id}});  // idempotent
  h.Fails("DisableKey", {{"KeyId", id}}, "AccessDeniedException", Bob());
  h.Fails("EnableKey", {{"KeyId", "alias/none"}}, "NotFoundException");
}

TEST_CASE("ScheduleKeyDeletion and CancelKeyDeletion", "[service][keys]") {
  KmsService::Options o = Harness::TestOptions();
  o.min_pending_window_days = 7;
  Harness h(SinkKind::kRecording, o);
  const std::string id = h.CreateKey();
  h.Fails("ScheduleKeyDeletion", {{"KeyId", id}, {"PendingWindowInDays", 6}},
          "ValidationException");
  std::string msg = h.Fails("ScheduleKeyDeletion", {{"KeyId", id}, {"PendingWindowInDays", 31}},
                            "ValidationException");
  CHECK(msg.find("7 to 30") != std::string::npos);

  json r = h.Ok("ScheduleKeyDeletion", {{"KeyId", id}, {"PendingWindowInDays", 7}});
  const int64_t now = h.clock.now;
  CHECK(r["KeyId"] == id);
  CHECK(r["KeyState"] == "PendingDeletion");
  CHECK(r["DeletionDate"] == now + 7 * 86400);
  CHECK(r["PendingWindowInDays"] == 7);
  CHECK(h.Ok("DescribeKey", {{"KeyId", id}})["KeyMetadata"]["DeletionDate"] == now + 7 * 86400);
  h.Fails("Encrypt", {{"KeyId", id}, {"Plaintext", testing::B64("x")}}, "KMSInvalidStateException");
  h.Fails("EnableKey", {{"KeyId", id}}, "KMSInvalidStateException");
  h.Fails("ScheduleKeyDeletion", {{"KeyId", id}}, "KMSInvalidStateException");

  h.Ok("CancelKeyDeletion", {{"KeyId", id}});
  json m = h.Ok("DescribeKey", {{"KeyId", id}})["KeyMetadata"];
  CHECK(m["KeyState"] == "Disabled");  // as AWS
  CHECK_FALSE(m.contains("DeletionDate"));
  h.Fails("CancelKeyDeletion", {{"KeyId", id}}, "KMSInvalidStateException");
  h.Ok("EnableKey", {{"KeyId", id}});
  h.Ok("Encrypt", {{"KeyId", id}, {"Plaintext", testing::B64("x")}});

  SECTION("the default window is 30 days") {
    json d = h.Ok("ScheduleKeyDeletion", {{"KeyId", id}});
    CHECK(d["PendingWindowInDays"] == 30);
  }
}

TEST_CASE("aliases: create, update, delete, list, and use everywhere", "[service][aliases]") {
  Harness h;
  const std::string a = h.CreateKey();
  const std::string b = h.CreateKey();
  h.Ok("CreateAlias", {{"AliasName", "alias/app"}, {"TargetKeyId", a}});
  CHECK(h.LastAudit().operation == "CreateAlias");
  CHECK(h.LastAudit().key_id == a);
  h.Fails("CreateAlias", {{"AliasName", "alias/app"}, {"TargetKeyId", b}},
          "AlreadyExistsException");
  h.Fails("CreateAlias", {{"AliasName", "app"}, {"TargetKeyId", b}}, "ValidationException");
  h.Fails("CreateAlias", {{"AliasName", "alias/aws/x"}, {"TargetKeyId", b}}, "ValidationException");
  h.Fails("CreateAlias", {{"AliasName", "alias/x"}, {"TargetKeyId", "alias/app"}},
          "ValidationException");
  h.Fails("CreateAlias", {{"AliasName", "alias/x"}, {"TargetKeyId", a}}, "AccessDeniedException",
          Alice());

  // Use through the alias: the blob names the key id, never the alias.
  json dk = h.Ok("GenerateDataKey", {{"KeyId", "alias/app"}, {"KeySpec", "AES_256"}});
  CHECK(dk["KeyId"] == a);
  CHECK(testing::BlobKey(dk["CiphertextBlob"]).first == a);
  json enc = h.Ok("Encrypt", {{"KeyId", "alias/app"}, {"Plaintext", testing::B64("hi")}});
  h.Ok("Decrypt", {{"CiphertextBlob", enc["CiphertextBlob"]}, {"KeyId", "alias/app"}});
  h.Ok("DisableKey", {{"KeyId", "alias/app"}});
  h.Ok("EnableKey", {{"KeyId", "alias/app"}});
  h.Ok("GetKeyRotationStatus", {{"KeyId", "alias/app"}});

  // UpdateAlias moves it; old blobs still decrypt (they name the key, not the alias).
  h.Ok("UpdateAlias", {{"AliasName", "alias/app"}, {"TargetKeyId", b}});
  CHECK(h.Ok("DescribeKey", {{"KeyId", "alias/app"}})["KeyMetadata"]["KeyId"] == b);
  CHECK(h.Ok("Decrypt", {{"CiphertextBlob", enc["CiphertextBlob"]}})["KeyId"] == a);
  h.Fails("Decrypt", {{"CiphertextBlob", enc["CiphertextBlob"]}, {"KeyId", "alias/app"}},
          "IncorrectKeyException");
  h.Fails("UpdateAlias", {{"AliasName", "alias/none"}, {"TargetKeyId", b}}, "NotFoundException");

  h.Ok("CreateAlias", {{"AliasName", "alias/other"}, {"TargetKeyId", a}});
  json list = h.Ok("ListAliases", json::object(), Alice());
  REQUIRE(list["Aliases"].size() == 2);
  CHECK(list["Aliases"][0]["AliasName"] == "alias/app");
  CHECK(list["Aliases"][0]["TargetKeyId"] == b);
  CHECK(list["Aliases"][0]["AliasArn"] == "arn:kmsfs:kms:local::alias/app");
  CHECK(list["Truncated"] == false);
  json only_a = h.Ok("ListAliases", {{"KeyId", a}});
  REQUIRE(only_a["Aliases"].size() == 1);
  CHECK(only_a["Aliases"][0]["AliasName"] == "alias/other");
  json page = h.Ok("ListAliases", {{"Limit", 1}});
  CHECK(page["Truncated"] == true);
  json page2 = h.Ok("ListAliases", {{"Limit", 1}, {"Marker", page["NextMarker"]}});
  CHECK(page2["Aliases"][0]["AliasName"] == "alias/other");
  h.Fails("ListAliases", {{"Limit", 101}}, "ValidationException");

  h.Ok("DeleteAlias", {{"AliasName", "alias/app"}});
  h.Fails("DeleteAlias", {{"AliasName", "alias/app"}}, "NotFoundException");
  h.Fails("DescribeKey", {{"KeyId", "alias/app"}}, "NotFoundException");
  // A failed change is audited; a failed read (other than a denial) is not.
  CHECK(h.LastAudit().operation == "DeleteAlias");
  CHECK(h.LastAudit().outcome == "NotFoundException");
}

TEST_CASE("PutKeyPolicy and GetKeyPolicy", "[service][policy]") {
  Harness h;
  const std::string id = h.CreateKey();
  const std::string policy = R"({"Version":"2012-10-17","Statement":[
    {"Sid":"Root","Effect":"Allow","Principal":{"Uid":0},"Action":"kms:*","Resource":"*"},
    {"Sid":"AliceDescribes","Effect":"Allow","Principal":{"Uid":1000},"Action":"kms:DescribeKey"}]})";
  h.Fails("DescribeKey", {{"KeyId", id}}, "AccessDeniedException", Alice());
  h.Ok("PutKeyPolicy", {{"KeyId", id}, {"PolicyName", "default"}, {"Policy", policy}});
  // Takes effect on the very next request (no stale cache).
  h.Ok("DescribeKey", {{"KeyId", id}}, Alice());
  json got = h.Ok("GetKeyPolicy", {{"KeyId", id}});
  CHECK(got["Policy"] == policy);
  CHECK(got["PolicyName"] == "default");
  auto rec = h.LastAudit();
  CHECK(rec.operation == "PutKeyPolicy");
  CHECK(rec.detail.find("sha256") != std::string::npos);

  h.Fails("PutKeyPolicy", {{"KeyId", id}, {"Policy", policy}}, "AccessDeniedException", Alice());
  h.Fails("GetKeyPolicy", {{"KeyId", id}}, "AccessDeniedException", Alice());
  h.Fails("PutKeyPolicy", {{"KeyId", id}, {"PolicyName", "other"}, {"Policy", policy}},
          "ValidationException");
  h.Fails("GetKeyPolicy", {{"KeyId", id}, {"PolicyName", "other"}}, "ValidationException");
  h.Fails("PutKeyPolicy", {{"KeyId", id}}, "ValidationException");
  std::string msg =
      h.Fails("PutKeyPolicy", {{"KeyId", id}, {"Policy", R"({"Version":"2012-10-17"})"}},
              "ValidationException");
  CHECK(msg.find("Policy is not a valid key policy") != std::string::npos);

  SECTION("the lockout safety check, and its bypass") {
    const std::string alice_admin = R"({"Version":"2012-10-17","Statement":[
      {"Sid":"A","Effect":"Allow","Principal":{"Uid":1000},"Action":"kms:*"}]})";
    h.Fails("PutKeyPolicy", {{"KeyId", id}, {"Policy", alice_admin}}, "ValidationException");
    h.Ok("PutKeyPolicy",
         {{"KeyId", id}, {"Policy", alice_admin}, {"BypassPolicyLockoutSafetyCheck", true}});
    h.Fails("DescribeKey", {{"KeyId", id}}, "AccessDeniedException", Root());
    h.Ok("DescribeKey", {{"KeyId", id}}, Alice());
  }
}

TEST_CASE("Ping, Status and unknown operations", "[service]") {
  Harness h;
  h.CreateKey();
  h.CreateKey();
  json ping = h.Ok("Ping", json::object(), Bob());
  CHECK(ping["Version"].is_string());
  CHECK_FALSE(ping["Version"].get<std::string>().empty());
  json st = h.Ok("Status", json::object(), Bob());
  CHECK(st["KeyCount"] == 2);
  CHECK(st["UptimeSeconds"].is_number_integer());
  CHECK(st["Version"] == ping["Version"]);
  h.Fails("Ping", {{"X", 1}}, "ValidationException");
  h.Fails("NoSuchOp", json::object(), "UnsupportedOperationException");
  h.Fails("ListAudit", json::object(), "UnsupportedOperationException");
  h.Fails("Ping", json::array(), "ValidationException");
}

TEST_CASE("Backup: root only, consistent copy, never overwrites", "[service][backup]") {
  Harness h(SinkKind::kSimple);
  const std::string id = h.CreateKey();
  const std::string path = h.dir.Sub("backup.mdb");
  h.Fails("Backup", {{"Path", path}}, "AccessDeniedException", Alice());
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(h.LastAudit().operation == "Backup");
  CHECK(h.LastAudit().outcome == "AccessDeniedException");
  json r = h.Ok("Backup", {{"Path", path}});
  CHECK(r["Path"] == path);
  CHECK(std::filesystem::exists(path));
  CHECK(testing::ModeOf(path) == 0600);
  h.Fails("Backup", {{"Path", path}}, "AlreadyExistsException");
  h.Fails("Backup", {{"Path", "relative.mdb"}}, "ValidationException");
  h.Fails("Backup", {{"Path", h.dir.Sub("no/such/dir/b.mdb")}}, "KMSInternalException");

  // The copy is a working state directory.
  const std::string restored = h.dir.Sub("restored");
  std::filesystem::create_directory(restored);
  ::chmod(restored.c_str(), 0700);
  std::filesystem::copy_file(path, restored + "/data.mdb");
  auto store = KeyStore::Open(restored, testing::TestRootKey(7));
  REQUIRE(store.ok());
  CHECK((*store)->GetKey(id).ok());
}

}  // namespace
}  // namespace kmsfs::keyd
