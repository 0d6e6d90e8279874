// The key-version lifecycle through the service: RetireKeyVersion, CancelKeyVersionRetirement,
// ListKeyVersions and the scheduler's destruction of retired versions (docs/lifecycle.md).
#include "tests/unit/keyd/service/service_test_util.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

using testing::B64;
using testing::BlobKey;
using testing::DecodeB64;
using testing::Harness;
using testing::SinkKind;

constexpr int64_t kDay = 86400;
const json kCtx = {{"kmsfs:volume", "v"}, {"kmsfs:file", "f"}};

// A key with versions 1, 2, 3 (3 primary) and one data key wrapped under each.
struct ThreeVersions {
  std::string id;
  std::vector<std::pair<json, Bytes>> blobs;  // index i: version i + 1
};

ThreeVersions MakeThreeVersions(Harness& h) {
  ThreeVersions t;
  t.id = h.CreateKey();
  for (int v = 1; v <= 3; ++v) {
    if (v > 1) {
      h.clock.now += 10;
      h.Ok("RotateKeyOnDemand", {{"KeyId", t.id}});
    }
    json dk = h.Ok("GenerateDataKey",
                   {{"KeyId", t.id}, {"KeySpec", "AES_256"}, {"EncryptionContext", kCtx}});
    REQUIRE(BlobKey(dk["CiphertextBlob"]).second == static_cast<uint32_t>(v));
    t.blobs.emplace_back(dk["CiphertextBlob"], DecodeB64(dk["Plaintext"]));
  }
  return t;
}

TEST_CASE("RetireKeyVersion refuses use at once, audits refusals, destroys after the window",
          "[service][lifecycle]") {
  for (SinkKind kind : {SinkKind::kRecording, SinkKind::kSimple}) {
    Harness h(kind);
    ThreeVersions t = MakeThreeVersions(h);
    json r =
        h.Ok("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 1}, {"PendingWindowInDays", 2}});
    CHECK(r["KeyId"] == t.id);
    CHECK(r["KeyVersion"] == 1);
    CHECK(r["KeyVersionState"] == "Retired");
    CHECK(r["DestructionDate"] == h.clock.now.load() + 2 * kDay);
    CHECK(r["PendingWindowInDays"] == 2);
    AuditRecord rec = h.LastAudit();
    CHECK(rec.operation == "RetireKeyVersion");
    CHECK(rec.key_id == t.id);
    CHECK(rec.key_version == 1);
    CHECK(rec.outcome == "Success");

    // Refused at once, with an audit record naming the version.
    std::string msg =
        h.Fails("Decrypt", {{"CiphertextBlob", t.blobs[0].first}, {"EncryptionContext", kCtx}},
                "KeyUnavailableException");
    CHECK(msg.find("Retired") != std::string::npos);
    rec = h.LastAudit();
    CHECK(rec.operation == "Decrypt");
    CHECK(rec.outcome == "KeyUnavailableException");
    CHECK(rec.key_version == 1);
    h.Fails("ReEncrypt",
            {{"CiphertextBlob", t.blobs[0].first},
             {"SourceEncryptionContext", kCtx},
             {"DestinationKeyId", t.id},
             {"DestinationEncryptionContext", kCtx}},
            "KeyUnavailableException");
    CHECK(h.LastAudit().outcome == "KeyUnavailableException");
    // The other versions are untouched.
    for (int i : {1, 2}) {
      json d = h.Ok("Decrypt", {{"CiphertextBlob", t.blobs[i].first}, {"EncryptionContext", kCtx}});
      CHECK(DecodeB64(d["Plaintext"]) == t.blobs[i].second);
    }

    json list = h.Ok("ListKeyVersions", {{"KeyId", t.id}});
    REQUIRE(list["Versions"].size() == 3);
    CHECK(list["PrimaryVersion"] == 3);
    CHECK(list["Versions"][0]["KeyVersionState"] == "Retired");
    CHECK(list["Versions"][0]["RotationType"] == "INITIAL");
    CHECK(list["Versions"][0].contains("DestructionDate"));
    CHECK(list["Versions"][2]["Primary"] == true);

    // Not yet: one second before the date nothing is destroyed.
    h.clock.now += 2 * kDay - 1;
    auto work = h.service->RunScheduledWork(h.clock.now);
    CHECK(work.destroyed_versions.empty());
    REQUIRE(h.store->ListVersions(t.id).ok());
    h.clock.now += 1;
    work = h.service->RunScheduledWork(h.clock.now);
    CHECK(work.failed.empty());
    CHECK(work.destroyed_versions == std::vector<std::string>{t.id + "/1"});
    rec = h.LastAudit();
    CHECK(rec.operation == "DestroyKeyVersion");
    CHECK(rec.key_version == 1);
    CHECK(rec.outcome == "Success");
    CHECK(rec.detail.find("destroyed") != std::string::npos);
    // Material gone from the store, not merely refused; the version stays listed.
    CHECK(h.store->GetVersionMaterial(t.id, 1).error().code() == Code::kKeyUnavailable);
    CHECK(h.Ok("ListKeyVersions", {{"KeyId", t.id}})["Versions"][0]["KeyVersionState"] ==
          "Destroyed");
    h.Fails("Decrypt", {{"CiphertextBlob", t.blobs[0].first}, {"EncryptionContext", kCtx}},
            "KeyUnavailableException");
    h.Fails("CancelKeyVersionRetirement", {{"KeyId", t.id}, {"KeyVersion", 1}},
            "KMSInvalidStateException");
    // Idempotent scheduler.
    h.clock.now += kDay;
    CHECK(h.service->RunScheduledWork(h.clock.now).destroyed_versions.empty());
  }
}

TEST_CASE("CancelKeyVersionRetirement is refused once the destruction date has passed",
          "[service][lifecycle]") {
  Harness h;
  ThreeVersions t = MakeThreeVersions(h);
  h.Ok("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 2}, {"PendingWindowInDays", 1}});
  h.clock.now += kDay;  // due now; the scheduler has not run
  h.Fails("CancelKeyVersionRetirement", {{"KeyId", t.id}, {"KeyVersion", 2}},
          "KMSInvalidStateException");
  CHECK(h.Ok("ListKeyVersions", {{"KeyId", t.id}})["Versions"][1]["KeyVersionState"] ==
        "Retired");
  h.Fails("Decrypt", {{"CiphertextBlob", t.blobs[1].first}, {"EncryptionContext", kCtx}},
          "KeyUnavailableException");
  CHECK(h.service->RunScheduledWork(h.clock.now).destroyed_versions ==
        std::vector<std::string>{t.id + "/2"});
}

TEST_CASE("CancelKeyVersionRetirement restores a retired version", "[service][lifecycle]") {
  Harness h;
  ThreeVersions t = MakeThreeVersions(h);
  h.Ok("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 2}, {"PendingWindowInDays", 1}});
  h.Fails("Decrypt", {{"CiphertextBlob", t.blobs[1].first}, {"EncryptionContext", kCtx}},
          "KeyUnavailableException");
  json c = h.Ok("CancelKeyVersionRetirement", {{"KeyId", t.id}, {"KeyVersion", 2}});
  CHECK(c["KeyVersionState"] == "Enabled");
  CHECK(h.LastAudit().operation == "CancelKeyVersionRetirement");
  json d = h.Ok("Decrypt", {{"CiphertextBlob", t.blobs[1].first}, {"EncryptionContext", kCtx}});
  CHECK(DecodeB64(d["Plaintext"]) == t.blobs[1].second);
  CHECK_FALSE(
      h.Ok("ListKeyVersions", {{"KeyId", t.id}})["Versions"][1].contains("DestructionDate"));
  // The old date passing destroys nothing.
  h.clock.now += 5 * kDay;
  CHECK(h.service->RunScheduledWork(h.clock.now).destroyed_versions.empty());
  h.Ok("Decrypt", {{"CiphertextBlob", t.blobs[1].first}, {"EncryptionContext", kCtx}});

  SECTION("retired again with a later date: the earlier date destroys nothing") {
    h.Ok("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 2}, {"PendingWindowInDays", 3}});
    h.clock.now += 2 * kDay;
    CHECK(h.service->RunScheduledWork(h.clock.now).destroyed_versions.empty());
    h.clock.now += kDay;
    CHECK(h.service->RunScheduledWork(h.clock.now).destroyed_versions.size() == 1);
  }
}

TEST_CASE("RetireKeyVersion errors", "[service][lifecycle]") {
  Harness h;
  ThreeVersions t = MakeThreeVersions(h);
  // The primary version cannot be retired: rotate first.
  std::string msg =
      h.Fails("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 3}}, "KMSInvalidStateException");
  CHECK(msg.find("primary") != std::string::npos);
  CHECK(h.LastAudit().outcome == "KMSInvalidStateException");  // refused changes are audited
  h.Fails("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 9}}, "NotFoundException");
  h.Fails("RetireKeyVersion", {{"KeyId", t.id}}, "ValidationException");
  h.Fails("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 0}}, "ValidationException");
  h.Fails("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", "1"}}, "ValidationException");
  h.Fails("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 1}, {"Force", true}},
          "ValidationException");
  h.Fails("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 1}, {"PendingWindowInDays", 31}},
          "ValidationException");
  h.Fails("CancelKeyVersionRetirement", {{"KeyId", t.id}, {"KeyVersion", 1}},
          "KMSInvalidStateException");  // not retired
  h.Ok("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 1}});
  h.Fails("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 1}}, "KMSInvalidStateException");
  // The default window is the deletion default (30 days).
  CHECK(h.Ok("ListKeyVersions", {{"KeyId", t.id}})["Versions"][0]["DestructionDate"] ==
        h.clock.now.load() + 30 * kDay);

  SECTION("a user without kms:RetireKeyVersion is refused and audited") {
    h.Fails("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 2}}, "AccessDeniedException",
            testing::Alice());
    CHECK(h.LastAudit().decision == "Deny");
    h.Fails("CancelKeyVersionRetirement", {{"KeyId", t.id}, {"KeyVersion", 1}},
            "AccessDeniedException", testing::Alice());
    h.Fails("ListKeyVersions", {{"KeyId", t.id}}, "AccessDeniedException", testing::Alice());
  }
  SECTION("not on a key pending deletion") {
    h.Ok("ScheduleKeyDeletion", {{"KeyId", t.id}, {"PendingWindowInDays", 7}});
    h.Fails("RetireKeyVersion", {{"KeyId", t.id}, {"KeyVersion", 2}}, "KMSInvalidStateException");
    h.Fails("CancelKeyVersionRetirement", {{"KeyId", t.id}, {"KeyVersion", 1}},
            "KMSInvalidStateException");
  }
}

}  // namespace
}  // namespace kmsfs::keyd
