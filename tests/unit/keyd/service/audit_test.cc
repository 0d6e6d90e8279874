// Fail-closed auditing through the service, and the interim SimpleAuditSink.
#include "tests/unit/keyd/service/service_test_util.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

using testing::B64;
using testing::FailingAuditSink;
using testing::Harness;
using testing::Root;
using testing::SinkKind;
using testing::TempDir;
using testing::TestRootKey;

const char kAuditDown[] = "audit trail unavailable: request denied (fail closed)";

TEST_CASE("fail closed: no plaintext without a durable audit record", "[service][audit]") {
  Harness h(SinkKind::kFailing);
  h.failing.failing = false;
  const std::string id = h.CreateKey();
  json dk = h.Ok("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}});
  json enc = h.Ok("Encrypt", {{"KeyId", id}, {"Plaintext", B64("x")}});
  h.failing.failing = true;

  for (const auto& [op, params] : std::vector<std::pair<std::string, json>>{
           {"GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}}},
           {"GenerateDataKeyWithoutPlaintext", {{"KeyId", id}, {"KeySpec", "AES_256"}}},
           {"Decrypt", {{"CiphertextBlob", dk["CiphertextBlob"]}}},
           {"Encrypt", {{"KeyId", id}, {"Plaintext", B64("y")}}},
           {"ReEncrypt", {{"CiphertextBlob", enc["CiphertextBlob"]}, {"DestinationKeyId", id}}}}) {
    CAPTURE(op);
    ServiceReply r = h.Call(op, params);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error_name == "KMSInternalException");
    CHECK(r.error_message.find(kAuditDown) == 0);
    CHECK(r.result == json::object());  // no plaintext, no blob
  }
  SECTION("denials and failures are refused the same way") {
    h.Fails("Decrypt", {{"CiphertextBlob", "AAAA"}}, "KMSInternalException");
    h.Fails("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}}, "KMSInternalException",
            testing::Alice());
  }
  SECTION("reads that need no record keep working") {
    h.Ok("DescribeKey", {{"KeyId", id}});
    h.Ok("ListKeys");
    h.Ok("Ping");
  }
  SECTION("recovers when the trail is back") {
    h.failing.failing = false;
    h.Ok("Decrypt", {{"CiphertextBlob", dk["CiphertextBlob"]}});
  }
}

// A sink that keeps AppendAsync's records and their continuations, for the test to settle.
class DeferringAuditSink final : public AuditSink {
 public:
  Status Append(AuditRecord record) override {
    sync_records.push_back(std::move(record));
    return Status::Ok();
  }
  void AppendAsync(AuditRecord record, std::function<void(Status)> done) override {
    pending.emplace_back(std::move(record), std::move(done));
  }
  std::vector<AuditRecord> sync_records;
  std::vector<std::pair<AuditRecord, std::function<void(Status)>>> pending;
};

TEST_CASE("HandleAsync: no answer before the audit record is settled, and no key if it fails",
          "[service][audit]") {
  Harness h;
  const std::string id = h.CreateKey();
  const json enc = h.Ok("Encrypt", {{"KeyId", id}, {"Plaintext", B64("x")}});
  DeferringAuditSink sink;
  auto svc = KmsService::Create(h.store.get(), &sink, &h.resolver, h.clock.Fn(),
                                Harness::TestOptions());
  REQUIRE(svc.ok());
  KmsService& service = **svc;
  std::vector<ServiceReply> replies;
  auto collect = [&](ServiceReply r) { replies.push_back(std::move(r)); };

  service.HandleAsync("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}}, Root(),
                      collect);
  CHECK(replies.empty());  // the key waits for its record
  REQUIRE(sink.pending.size() == 1);
  CHECK(sink.pending[0].first.operation == "GenerateDataKey");
  CHECK(sink.pending[0].first.outcome == "Success");

  SECTION("a durable record releases the key") {
    sink.pending[0].second(Status::Ok());
    REQUIRE(replies.size() == 1);
    REQUIRE(replies[0].ok());
    CHECK(replies[0].result.contains("Plaintext"));
    CHECK(replies[0].result.contains("CiphertextBlob"));
  }
  SECTION("a failed record refuses it (fail closed)") {
    sink.pending[0].second(Error(Code::kIo, "audit disk full (test)", 28));
    REQUIRE(replies.size() == 1);
    REQUIRE_FALSE(replies[0].ok());
    CHECK(replies[0].error_name == "KMSInternalException");
    CHECK(replies[0].error_message.find(kAuditDown) == 0);
    CHECK(replies[0].result == json::object());
  }
  SECTION("an operation without a record answers at once") {
    service.HandleAsync("DescribeKey", {{"KeyId", id}}, Root(), collect);
    REQUIRE(replies.size() == 1);
    CHECK(replies[0].ok());
    CHECK(sink.pending.size() == 1);
  }
  SECTION("two records (ReEncrypt) take the synchronous path") {
    service.HandleAsync("ReEncrypt",
                        {{"CiphertextBlob", enc["CiphertextBlob"]}, {"DestinationKeyId", id}},
                        Root(), collect);
    REQUIRE(replies.size() == 1);
    CHECK(replies[0].ok());
    CHECK(sink.pending.size() == 1);
    CHECK(sink.sync_records.size() == 2);
  }
}

TEST_CASE("admin changes: in the change's transaction when the sink supports it",
          "[service][audit]") {
  SECTION("transactional sink failing: the change is not applied") {
    Harness h(SinkKind::kFailing);
    h.failing.failing = false;
    const std::string id = h.CreateKey();
    h.failing.failing = true;
    std::string msg = h.Fails("DisableKey", {{"KeyId", id}}, "KMSInternalException");
    CHECK(msg.find(kAuditDown) == 0);
    CHECK(msg.find("was applied") == std::string::npos);
    h.failing.failing = false;
    CHECK(h.Ok("DescribeKey", {{"KeyId", id}})["KeyMetadata"]["KeyState"] == "Enabled");
    h.failing.failing = true;
    h.Fails("ScheduleKeyDeletion", {{"KeyId", id}}, "KMSInternalException");
    h.Fails("RotateKeyOnDemand", {{"KeyId", id}}, "KMSInternalException");
    h.Fails("CreateAlias", {{"AliasName", "alias/a"}, {"TargetKeyId", id}}, "KMSInternalException");
    h.failing.failing = false;
    CHECK(h.Ok("DescribeKey", {{"KeyId", id}})["KeyMetadata"]["KeyState"] == "Enabled");
    CHECK(h.store->ListVersions(id)->size() == 1);
    h.Fails("DescribeKey", {{"KeyId", "alias/a"}}, "NotFoundException");
  }
  SECTION("scheduled destruction waits for the audit trail") {
    Harness h(SinkKind::kFailing);
    h.failing.failing = false;
    const std::string id = h.CreateKey();
    h.Ok("ScheduleKeyDeletion", {{"KeyId", id}, {"PendingWindowInDays", 0}});
    h.failing.failing = true;
    auto r = h.service->RunScheduledWork(h.clock.now);
    CHECK(r.destroyed.empty());
    CHECK(r.failed.size() == 1);
    CHECK(h.store->GetKey(id)->key_state == KeyState::kPendingDeletion);
    h.failing.failing = false;
    CHECK(h.service->RunScheduledWork(h.clock.now).destroyed.size() == 1);
    CHECK(h.failing.recorded.last().operation == "DeleteKey");
  }
  SECTION("simple sink: the record is committed with the change") {
    Harness h(SinkKind::kSimple);
    const std::string id = h.CreateKey();
    h.Ok("DisableKey", {{"KeyId", id}});
    auto all = h.Audit();
    REQUIRE(all.size() == 2);
    CHECK(all[0].operation == "CreateKey");
    CHECK(all[1].operation == "DisableKey");
    CHECK(all[1].outcome == "Success");
    CHECK(all[1].sequence == 2);
    CHECK(all[1].time_us == h.clock.now.load() * 1000000);
    // A failed change is recorded once, as a failure.
    h.Fails("CancelKeyDeletion", {{"KeyId", id}}, "KMSInvalidStateException");
    all = h.Audit();
    REQUIRE(all.size() == 3);
    CHECK(all[2].operation == "CancelKeyDeletion");
    CHECK(all[2].outcome == "KMSInvalidStateException");
  }
}

TEST_CASE("audit records carry who, what, which key and version, and why", "[service][audit]") {
  Harness h(SinkKind::kSimple);
  const std::string id = h.CreateKey();
  h.Ok("RotateKeyOnDemand", {{"KeyId", id}});
  json ctx = {{"kmsfs:volume", "v9"}, {"kmsfs:file", "0a"}};
  json dk =
      h.Ok("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}, {"EncryptionContext", ctx}},
           testing::Forwarded(0, "/srv/x"));
  AuditRecord r = h.LastAudit();
  CHECK(r.operation == "GenerateDataKey");
  CHECK(r.key_id == id);
  CHECK(r.key_version == 2);
  CHECK(r.principal.uid == 0);
  CHECK(r.principal.pid == 777);
  CHECK(r.principal.executable == "/usr/bin/cat");
  REQUIRE(r.forwarder.has_value());
  CHECK(r.forwarder->executable == "/usr/bin/kmsfs");
  CHECK(r.encryption_context ==
        std::map<std::string, std::string>{{"kmsfs:volume", "v9"}, {"kmsfs:file", "0a"}});
  CHECK(r.path == "/srv/x");
  CHECK(r.decision == "Allow");
  CHECK(r.sid == "RootAdministersAndUsesTheKey");
  CHECK(r.outcome == "Success");
  // Never key material: the plaintext's base64 appears in no record.
  const std::string plain_b64 = dk["Plaintext"];
  for (const AuditRecord& rec : h.Audit()) {
    CHECK(EncodeAuditRecord(rec)->find(plain_b64) == std::string::npos);
  }
}

TEST_CASE("SimpleAuditSink: durable, ordered, readable, rolled back with its transaction",
          "[audit][simple]") {
  TempDir dir;
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  auto sink = SimpleAuditSink::Open(**env);
  REQUIRE(sink.ok());
  AuditRecord rec;
  rec.operation = "Decrypt";
  rec.key_id = "k";
  rec.key_version = 3;
  rec.principal.uid = 1000;
  rec.principal.gid = 100;
  rec.principal.pid = 5;
  rec.principal.unit = "x.service";
  Principal fwd;
  fwd.uid = 0;
  rec.forwarder = fwd;
  rec.encryption_context = {{"a", "b"}};
  rec.path = "/p";
  rec.decision = "Deny";
  rec.sid = "S";
  rec.outcome = "AccessDeniedException";
  rec.detail = "why";
  REQUIRE((*sink)->Append(rec).ok());
  REQUIRE((*sink)->Append(rec).ok());
  {
    // Written in a transaction that is then aborted: no record, no gap.
    auto txn = (*env)->BeginWrite();
    REQUIRE(txn.ok());
    REQUIRE((*sink)->AppendInTxn(*txn, rec).ok());
  }
  REQUIRE((*sink)->Append(rec).ok());
  auto all = (*sink)->Read(0, 1000);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 3);
  for (size_t i = 0; i < 3; ++i) CHECK((*all)[i].sequence == i + 1);
  const AuditRecord& got = (*all)[2];
  CHECK(got.operation == "Decrypt");
  CHECK(got.key_version == 3);
  CHECK(got.principal.uid == 1000);
  CHECK(got.principal.unit == "x.service");
  REQUIRE(got.forwarder.has_value());
  CHECK(got.forwarder->uid == 0);
  CHECK(got.encryption_context.at("a") == "b");
  CHECK(got.path == "/p");
  CHECK(got.sid == "S");
  CHECK(got.detail == "why");
  CHECK(got.time_us > 0);
  auto tail = (*sink)->Read(2, 10);
  REQUIRE(tail.ok());
  REQUIRE(tail->size() == 1);
  CHECK((*tail)[0].sequence == 3);
  CHECK_FALSE((*sink)->Read(0, 0).ok());

  // Survives a reopen (it is in LMDB, committed).
  sink->reset();
  env->reset();
  auto env2 = Env::Open(dir.Sub("state"));
  REQUIRE(env2.ok());
  auto sink2 = SimpleAuditSink::Open(**env2);
  REQUIRE(sink2.ok());
  REQUIRE((*sink2)->Append(rec).ok());
  CHECK((*sink2)->Read(0, 1000)->back().sequence == 4);

  CHECK_FALSE(DecodeAuditRecord("{").ok());
  CHECK_FALSE(DecodeAuditRecord(R"({"Sequence": "x"})").ok());
  CHECK_FALSE(DecodeAuditRecord(R"({"Principal": {"Uid": -1}})").ok());
}

}  // namespace
}  // namespace kmsfs::keyd
