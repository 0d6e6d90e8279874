// KmsService's audit operations (ListAudit, VerifyAudit, GetAuditCheckpoint, ExportAudit,
// PruneAudit) over a real AuditTrail, and the TestAccess policy simulator.
#include <sys/stat.h>

#include "keyd/audit/audit_trail.h"
#include "tests/unit/keyd/service/service_test_util.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;
using namespace testing;  // NOLINT: the service test helpers (Root, Alice, TempDir, ...)

constexpr char kPolicy[] = R"({"Version": "2012-10-17", "Statement": [
  {"Sid": "Root", "Effect": "Allow", "Principal": {"Uid": 0}, "Action": "kms:*"},
  {"Sid": "AliceFiles", "Effect": "Allow", "Principal": {"Uid": 1000}, "Action": "kms:Decrypt",
   "Condition": {"StringLike": {"kmsfs:Path": "/alice/**"}}},
  {"Sid": "NoSecrets", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt",
   "Condition": {"StringLike": {"kmsfs:Path": "/alice/secret/**"}}}]})";

// A service whose sink and reader are one AuditTrail, as kmsfs-keyd wires it.
struct TrailHarness {
  TempDir dir;
  FakeClock clock;
  std::unique_ptr<KeyStore> store;
  StaticNameResolver resolver;
  std::unique_ptr<AuditTrail> trail;
  std::unique_ptr<KmsService> service;

  explicit TrailHarness(bool with_reader = true) {
    KeyStore::Options so;
    so.clock = clock.Fn();
    auto s = KeyStore::Open(dir.Sub("state"), TestRootKey(7), std::move(so));
    REQUIRE(s.ok());
    store = std::move(s).value();
    AuditTrail::Options ao;
    ao.journal = AuditTrail::Journal::kOff;
    auto t = AuditTrail::Open(store->env(), std::move(ao));
    REQUIRE(t.ok());
    trail = std::move(t).value();
    KmsService::Options o = Harness::TestOptions();
    if (with_reader) o.audit_reader = trail.get();
    auto svc = KmsService::Create(store.get(), trail.get(), &resolver, clock.Fn(), std::move(o));
    REQUIRE(svc.ok());
    service = std::move(svc).value();
  }
  ~TrailHarness() {
    service.reset();
    trail.reset();  // before the store whose Env it uses
  }

  ServiceReply Call(std::string_view op, const json& p, const CallerContext& c = Root()) {
    return service->Handle(op, p, c);
  }
  json Ok(std::string_view op, const json& p = json::object(), const CallerContext& c = Root()) {
    ServiceReply r = Call(op, p, c);
    INFO(op << " -> " << r.error_name << ": " << r.error_message);
    REQUIRE(r.ok());
    return r.result;
  }
  std::string Fails(std::string_view op, const json& p, std::string_view name,
                    const CallerContext& c = Root()) {
    ServiceReply r = Call(op, p, c);
    INFO(op << " -> " << r.error_name << ": " << r.error_message);
    CHECK(r.error_name == name);
    return r.error_message;
  }
};

TEST_CASE("audit operations need a reader and uid 0", "[service][audit]") {
  TrailHarness none(/*with_reader=*/false);
  none.Fails("ListAudit", json::object(), "UnsupportedOperationException");

  TrailHarness h;
  const std::string key = h.Ok("CreateKey", {{"Policy", kPolicy}})["KeyMetadata"]["KeyId"];
  for (const char* op : {"ListAudit", "VerifyAudit", "GetAuditCheckpoint"}) {
    CHECK(h.Fails(op, json::object(), "AccessDeniedException", Alice()).find("uid 0") !=
          std::string::npos);
  }
  // A root forwarder asking for alice is alice.
  h.Fails("ListAudit", json::object(), "AccessDeniedException", Forwarded(1000, "/alice/x"));
  h.Fails("PruneAudit", {{"UpTo", 1}}, "AccessDeniedException", Alice());
  // The denials are in the trail.
  const json denied = h.Ok("ListAudit", {{"Outcome", "AccessDeniedException"}});
  CHECK(denied["Records"].size() == 5);
  CHECK(denied["Records"][0]["Principal"]["Uid"] == 1000);
  CHECK(denied["Records"][0]["Decision"] == "Deny");
  (void)key;
}

TEST_CASE("ListAudit filters and pages", "[service][audit]") {
  TrailHarness h;
  const std::string key = h.Ok("CreateKey", {{"Policy", kPolicy}})["KeyMetadata"]["KeyId"];
  const json gdk = h.Ok("GenerateDataKey", {{"KeyId", key}, {"KeySpec", "AES_256"}});
  const json dec = {{"CiphertextBlob", gdk["CiphertextBlob"]}};
  h.Ok("Decrypt", dec, Forwarded(1000, "/alice/a"));
  h.Fails("Decrypt", dec, "AccessDeniedException", Forwarded(1000, "/alice/secret/a"));
  h.Fails("Decrypt", dec, "AccessDeniedException", Forwarded(1001, "/alice/a"));

  const json all = h.Ok("ListAudit");
  CHECK(all["Records"].size() == 5);
  CHECK(all["HeadSequence"] == 5);
  CHECK(all["Truncated"] == false);
  const json alice = h.Ok("ListAudit", {{"Uid", 1000}});
  REQUIRE(alice["Records"].size() == 2);
  CHECK(alice["Records"][0]["Sid"] == "AliceFiles");
  CHECK(alice["Records"][1]["Sid"] == "NoSecrets");
  CHECK(alice["Records"][1]["Path"] == "/alice/secret/a");
  CHECK(h.Ok("ListAudit", {{"PathPrefix", "/alice/secret"}})["Records"].size() == 1);
  CHECK(h.Ok("ListAudit", {{"KeyId", key}, {"Operation", "Decrypt"}})["Records"].size() == 3);
  CHECK(h.Ok("ListAudit", {{"StartTime", "1970-01-01T00:00:00Z"},
                           {"EndTime", "2999-01-01T00:00:00+02:00"}})["Records"]
            .size() == 5);
  CHECK(h.Ok("ListAudit", {{"StartTime", "2999-01-01T00:00:00.5Z"}})["Records"].empty());
  const json page = h.Ok("ListAudit", {{"Limit", 2}});
  CHECK(page["Records"].size() == 2);
  CHECK(page["Truncated"] == true);
  const json rest = h.Ok("ListAudit", {{"After", page["NextSequence"]}});
  CHECK(rest["Records"].size() == 3);
  CHECK(rest["Records"][0]["Sequence"] == 3);

  h.Fails("ListAudit", {{"StartTime", "yesterday"}}, "ValidationException");
  h.Fails("ListAudit", {{"Limit", 0}}, "ValidationException");
  h.Fails("ListAudit", {{"Uid", -1}}, "ValidationException");
  h.Fails("ListAudit", {{"Bogus", 1}}, "ValidationException");
  h.Fails("ListAudit", {{"KeyId", "alias/none"}}, "NotFoundException");
}

TEST_CASE("VerifyAudit, checkpoints, export and prune", "[service][audit]") {
  TrailHarness h;
  const std::string key = h.Ok("CreateKey")["KeyMetadata"]["KeyId"];
  for (int i = 0; i < 3; ++i)
    h.Ok("GenerateDataKeyWithoutPlaintext", {{"KeyId", key}, {"KeySpec", "AES_256"}});
  json v = h.Ok("VerifyAudit");
  CHECK(v["Ok"] == true);
  CHECK(v["First"] == 1);
  CHECK(v["Last"] == 4);
  CHECK(v["BadSequence"].is_null());

  const json cp = h.Ok("GetAuditCheckpoint");
  CHECK(cp["Sequence"] == 4);
  CHECK(h.Ok("VerifyAudit", {{"Checkpoint", cp}})["Ok"] == true);
  json forged = cp;
  forged["Hash"] = std::string(64, '0');
  v = h.Ok("VerifyAudit", {{"Checkpoint", forged}});
  CHECK(v["Ok"] == false);
  CHECK(v["BadSequence"] == 4);
  h.Fails("VerifyAudit", {{"Checkpoint", "x"}}, "ValidationException");
  h.Fails("VerifyAudit", {{"Checkpoint", {{"Sequence", 1}}}}, "ValidationException");

  const std::string out = h.dir.Sub("export.jsonl");
  const json ex = h.Ok("ExportAudit", {{"From", 0}, {"To", 4}, {"Path", out}});
  CHECK(ex["Checkpoint"]["Sequence"] == 4);
  struct stat st {};
  REQUIRE(::stat(out.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  h.Fails("ExportAudit", {{"Path", out}}, "AlreadyExistsException");
  h.Fails("ExportAudit", {{"Path", "relative"}}, "ValidationException");
  h.Fails("PruneAudit", {{"UpTo", 3}}, "KMSInvalidStateException");  // no checkpoint at 3
  CHECK(h.Ok("PruneAudit", {{"UpTo", 4}})["UpTo"] == 4);
  v = h.Ok("VerifyAudit");
  CHECK(v["Ok"] == true);
  CHECK(v["Anchor"] == 4);
  // The export and the prune are themselves audited.
  CHECK(h.Ok("ListAudit", {{"Operation", "ExportAudit"}})["Records"].size() == 3);
  CHECK(h.Ok("ListAudit", {{"Operation", "PruneAudit"}})["Records"].size() == 2);
}

TEST_CASE("TestAccess simulates a request and names the deciding statement", "[service][policy]") {
  TrailHarness h;
  const std::string key = h.Ok("CreateKey", {{"Policy", kPolicy}})["KeyMetadata"]["KeyId"];
  json r = h.Ok("TestAccess", {{"KeyId", key},
                               {"Action", "kms:Decrypt"},
                               {"Uid", 1000},
                               {"Gid", 1000},
                               {"Path", "/alice/x"}});
  CHECK(r["Decision"] == "Allow");
  CHECK(r["Sid"] == "AliceFiles");
  r = h.Ok("TestAccess", {{"KeyId", key},
                          {"Action", "kms:Decrypt"},
                          {"Uid", 1000},
                          {"Gid", 1000},
                          {"Path", "/alice/secret/x"}});
  CHECK(r["Decision"] == "Deny");
  CHECK(r["Explicit"] == true);
  CHECK(r["Sid"] == "NoSecrets");
  r = h.Ok("TestAccess", {{"KeyId", key}, {"Action", "kms:Decrypt"}, {"Uid", 1001}, {"Gid", 1001}});
  CHECK(r["Decision"] == "Deny");
  CHECK(r["Explicit"] == false);
  CHECK(h.Ok("TestAccess", {{"KeyId", key}, {"Action", "kms:PutKeyPolicy"}})["Decision"] ==
        "Allow");  // defaults to the caller (root)
  h.Fails("TestAccess", {{"KeyId", key}, {"Action", "kms:Fly"}}, "ValidationException");
  h.Fails("TestAccess", {{"KeyId", key}, {"Action", "kms:Decrypt"}, {"Uid", 5}},
          "ValidationException");
  // Simulating needs kms:GetKeyPolicy, which alice lacks; the denial is audited.
  h.Fails("TestAccess", {{"KeyId", key}, {"Action", "kms:Decrypt"}}, "AccessDeniedException",
          Alice());
  CHECK(h.Ok("ListAudit", {{"Operation", "TestAccess"}})["Records"].size() == 1);
}

}  // namespace
}  // namespace kmsfs::keyd
