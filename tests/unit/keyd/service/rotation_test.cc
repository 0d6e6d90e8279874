// Rotation (on demand and scheduled) and scheduled deletion (crypto-shredding), through the
// service; plus the pure schedule logic of keyd/rotation.
#include "keyd/rotation/schedule.h"
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

TEST_CASE("rotating twice keeps every blob readable; new data keys use the newest version",
          "[service][rotation]") {
  Harness h;
  const std::string id = h.CreateKey();
  std::vector<std::pair<json, Bytes>> blobs;  // (CiphertextBlob, plaintext)
  auto wrap = [&] {
    json dk = h.Ok("GenerateDataKey",
                   {{"KeyId", id}, {"KeySpec", "AES_256"}, {"EncryptionContext", kCtx}});
    blobs.emplace_back(dk["CiphertextBlob"], DecodeB64(dk["Plaintext"]));
    return BlobKey(dk["CiphertextBlob"]).second;
  };
  CHECK(wrap() == 1);
  h.clock.now += 10;
  CHECK(h.Ok("RotateKeyOnDemand", {{"KeyId", id}})["KeyId"] == id);
  CHECK(h.LastAudit().operation == "RotateKeyOnDemand");
  CHECK(h.LastAudit().key_version == 2);
  CHECK(wrap() == 2);
  h.clock.now += 10;
  h.Ok("RotateKeyOnDemand", {{"KeyId", id}});
  CHECK(wrap() == 3);
  for (const auto& [blob, plain] : blobs) {
    json d = h.Ok("Decrypt", {{"CiphertextBlob", blob}, {"EncryptionContext", kCtx}});
    CHECK(DecodeB64(d["Plaintext"]) == plain);
  }
  json rot = h.Ok("ListKeyRotations", {{"KeyId", id}});
  REQUIRE(rot["Rotations"].size() == 2);  // the initial material is not a rotation
  CHECK(rot["Rotations"][0]["RotationType"] == "ON_DEMAND");
  CHECK(rot["Rotations"][0]["KeyVersion"] == 2);
  CHECK(rot["Rotations"][1]["RotationDate"] == h.clock.now.load());
  CHECK(rot["Truncated"] == false);
  json page = h.Ok("ListKeyRotations", {{"KeyId", id}, {"Limit", 1}});
  REQUIRE(page["Rotations"].size() == 1);
  CHECK(page["Truncated"] == true);
  json page2 =
      h.Ok("ListKeyRotations", {{"KeyId", id}, {"Limit", 1}, {"Marker", page["NextMarker"]}});
  CHECK(page2["Rotations"][0]["KeyVersion"] == 3);
  CHECK(page2["Truncated"] == false);
  h.Fails("ListKeyRotations", {{"KeyId", id}, {"Marker", "x"}}, "ValidationException");

  SECTION("a disabled key cannot be rotated on demand") {
    h.Ok("DisableKey", {{"KeyId", id}});
    h.Fails("RotateKeyOnDemand", {{"KeyId", id}}, "DisabledException");
  }
  SECTION("nor can a key pending deletion") {
    h.Ok("ScheduleKeyDeletion", {{"KeyId", id}, {"PendingWindowInDays", 7}});
    h.Fails("RotateKeyOnDemand", {{"KeyId", id}}, "KMSInvalidStateException");
  }
  SECTION("a retired version no longer decrypts (KeyUnavailableException)") {
    REQUIRE(h.store->RetireVersion(id, 1).ok());
    h.Fails("Decrypt", {{"CiphertextBlob", blobs[0].first}, {"EncryptionContext", kCtx}},
            "KeyUnavailableException");
    h.Ok("Decrypt", {{"CiphertextBlob", blobs[1].first}, {"EncryptionContext", kCtx}});
  }
  SECTION("a blob naming a version that never existed is InvalidCiphertextException") {
    format::WrappedBlob b = *format::ParseWrappedBlob(DecodeB64(blobs[0].first));
    b.key_version = 99;
    h.Fails("Decrypt",
            {{"CiphertextBlob", format::Base64Encode(*format::SerializeWrappedBlob(b))},
             {"EncryptionContext", kCtx}},
            "InvalidCiphertextException");
  }
}

TEST_CASE("EnableKeyRotation, GetKeyRotationStatus, DisableKeyRotation", "[service][rotation]") {
  KmsService::Options o;  // AWS ranges: 90..2560
  Harness h(SinkKind::kRecording, o);
  const std::string id = h.CreateKey();
  json st = h.Ok("GetKeyRotationStatus", {{"KeyId", id}});
  CHECK(st["KeyRotationEnabled"] == false);
  CHECK_FALSE(st.contains("NextRotationDate"));
  std::string msg = h.Fails("EnableKeyRotation", {{"KeyId", id}, {"RotationPeriodInDays", 89}},
                            "ValidationException");
  CHECK(msg.find("90 to 2560") != std::string::npos);
  h.Fails("EnableKeyRotation", {{"KeyId", id}, {"RotationPeriodInDays", 2561}},
          "ValidationException");
  h.Fails("EnableKeyRotation", {{"KeyId", id}, {"RotationPeriodInDays", "90"}},
          "ValidationException");
  h.Ok("EnableKeyRotation", {{"KeyId", id}});
  st = h.Ok("GetKeyRotationStatus", {{"KeyId", id}});
  CHECK(st["KeyRotationEnabled"] == true);
  CHECK(st["RotationPeriodInDays"] == 365);
  CHECK(st["NextRotationDate"] == h.clock.now.load() + 365 * kDay);
  CHECK(h.LastAudit().operation == "EnableKeyRotation");
  h.Ok("EnableKeyRotation", {{"KeyId", id}, {"RotationPeriodInDays", 90}});
  CHECK(h.Ok("GetKeyRotationStatus", {{"KeyId", id}})["NextRotationDate"] ==
        h.clock.now.load() + 90 * kDay);
  h.Fails("EnableKeyRotation", {{"KeyId", id}}, "AccessDeniedException", testing::Alice());
  h.Ok("DisableKeyRotation", {{"KeyId", id}});
  CHECK(h.Ok("GetKeyRotationStatus", {{"KeyId", id}})["KeyRotationEnabled"] == false);
  h.Ok("DisableKey", {{"KeyId", id}});
  h.Fails("EnableKeyRotation", {{"KeyId", id}}, "DisabledException");
}

TEST_CASE("RunScheduledWork rotates due keys on a fake clock", "[service][rotation]") {
  Harness h(SinkKind::kSimple);
  const std::string id = h.CreateKey();
  const std::string idle = h.CreateKey();  // rotation off: never rotates
  h.Ok("EnableKeyRotation", {{"KeyId", id}, {"RotationPeriodInDays", 30}});
  const int64_t t0 = h.clock.now;

  h.clock.now = t0 + 30 * kDay - 1;
  auto r = h.service->RunScheduledWork(h.clock.now);
  CHECK(r.rotated.empty());

  h.clock.now = t0 + 30 * kDay;
  r = h.service->RunScheduledWork(h.clock.now);
  CHECK(r.rotated == std::vector<std::string>{id});
  CHECK(r.failed.empty());
  auto rec = h.LastAudit();
  CHECK(rec.operation == "RotateKey");
  CHECK(rec.key_id == id);
  CHECK(rec.key_version == 2);
  CHECK(rec.outcome == "Success");
  CHECK(h.Ok("GetKeyRotationStatus", {{"KeyId", id}})["NextRotationDate"] ==
        h.clock.now.load() + 30 * kDay);
  json rot = h.Ok("ListKeyRotations", {{"KeyId", id}});
  REQUIRE(rot["Rotations"].size() == 1);
  CHECK(rot["Rotations"][0]["RotationType"] == "AUTOMATIC");
  // A second run at the same instant does nothing (re-checked inside the transaction).
  CHECK(h.service->RunScheduledWork(h.clock.now).rotated.empty());
  json dk = h.Ok("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}});
  CHECK(BlobKey(dk["CiphertextBlob"]).second == 2);
  CHECK(h.Ok("ListKeyRotations", {{"KeyId", idle}})["Rotations"].empty());

  SECTION("a keyd that was down for several periods rotates once, then restarts the period") {
    h.clock.now += 100 * kDay;
    CHECK(h.service->RunScheduledWork(h.clock.now).rotated.size() == 1);
    CHECK(h.service->RunScheduledWork(h.clock.now).rotated.empty());
    CHECK(h.Ok("GetKeyRotationStatus", {{"KeyId", id}})["NextRotationDate"] ==
          h.clock.now.load() + 30 * kDay);
  }
  SECTION("a disabled key does not rotate until re-enabled") {
    h.Ok("DisableKey", {{"KeyId", id}});
    h.clock.now += 31 * kDay;
    CHECK(h.service->RunScheduledWork(h.clock.now).rotated.empty());
    h.Ok("EnableKey", {{"KeyId", id}});
    CHECK(h.service->RunScheduledWork(h.clock.now).rotated.size() == 1);
  }
}

TEST_CASE("test-only rotation in seconds: keys gain versions on schedule", "[service][rotation]") {
  KmsService::Options o = Harness::TestOptions();
  o.rotation_day_seconds = 1;  // "RotationPeriodInDays": 2 means every two seconds
  Harness h(SinkKind::kSimple, o);
  const std::string id = h.CreateKey();
  h.Ok("EnableKeyRotation", {{"KeyId", id}, {"RotationPeriodInDays", 2}});
  for (int i = 0; i < 6; ++i) {
    h.clock.now += 1;
    h.service->RunScheduledWork(h.clock.now);
  }
  auto versions = h.store->ListVersions(id);
  REQUIRE(versions.ok());
  CHECK(versions->size() == 4);  // 1 + rotations at +2, +4, +6
}

TEST_CASE("scheduled deletion destroys the key after its window", "[service][deletion]") {
  for (SinkKind kind : {SinkKind::kRecording, SinkKind::kSimple}) {
    Harness h(kind);
    const std::string id = h.CreateKey();
    h.Ok("CreateAlias", {{"AliasName", "alias/doomed"}, {"TargetKeyId", id}});
    h.Ok("EnableKeyRotation", {{"KeyId", id}, {"RotationPeriodInDays", 1}});
    json enc = h.Ok("Encrypt", {{"KeyId", id}, {"Plaintext", B64("payroll")}});
    h.Ok("ScheduleKeyDeletion", {{"KeyId", id}, {"PendingWindowInDays", 1}});

    h.clock.now += kDay - 1;
    auto r = h.service->RunScheduledWork(h.clock.now);
    CHECK(r.destroyed.empty());
    CHECK(r.rotated.empty());  // pending deletion: no rotation either
    h.clock.now += 1;
    r = h.service->RunScheduledWork(h.clock.now);
    CHECK(r.destroyed == std::vector<std::string>{id});
    CHECK(r.failed.empty());

    auto rec = h.LastAudit();
    CHECK(rec.operation == "DeleteKey");
    CHECK(rec.key_id == id);
    CHECK(rec.outcome == "Success");
    CHECK(rec.detail.find("destroyed") != std::string::npos);

    CHECK(h.Ok("DescribeKey", {{"KeyId", id}})["KeyMetadata"]["KeyState"] == "Destroyed");
    std::string msg =
        h.Fails("Decrypt", {{"CiphertextBlob", enc["CiphertextBlob"]}}, "KMSInvalidStateException");
    CHECK(msg.find("destroyed") != std::string::npos);
    rec = h.LastAudit();
    CHECK(rec.operation == "Decrypt");
    CHECK(rec.outcome == "KMSInvalidStateException");
    CHECK(rec.key_id == id);
    h.Fails("DescribeKey", {{"KeyId", "alias/doomed"}}, "NotFoundException");  // aliases gone
    h.Fails("CancelKeyDeletion", {{"KeyId", id}}, "KMSInvalidStateException");
    h.Fails("EnableKey", {{"KeyId", id}}, "KMSInvalidStateException");
    CHECK(h.Ok("ListKeys")["Keys"].empty());
    // The material is gone from the store, not merely refused.
    CHECK_FALSE(h.store->GetVersionMaterial(id, 1).ok());
    CHECK(h.service->RunScheduledWork(h.clock.now).destroyed.empty());
  }
}

TEST_CASE("a cancelled deletion is not carried out", "[service][deletion]") {
  Harness h;
  const std::string id = h.CreateKey();
  h.Ok("ScheduleKeyDeletion", {{"KeyId", id}, {"PendingWindowInDays", 0}});
  h.Ok("CancelKeyDeletion", {{"KeyId", id}});
  CHECK(h.service->RunScheduledWork(h.clock.now + kDay).destroyed.empty());
  h.Ok("EnableKey", {{"KeyId", id}});
  h.Ok("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}});
}

// ---- the pure logic of keyd/rotation
// ---------------------------------------------------------------

TEST_CASE("schedule options, periods and windows", "[rotation][schedule]") {
  ScheduleOptions o;
  CHECK(ValidateScheduleOptions(o).ok());
  CHECK(*ChooseRotationPeriod(std::nullopt, o) == 365);
  CHECK(*ChooseRotationPeriod(90, o) == 90);
  CHECK(*ChooseRotationPeriod(2560, o) == 2560);
  CHECK_FALSE(ChooseRotationPeriod(89, o).ok());
  CHECK(ChooseRotationPeriod(89, o).error().message() ==
        "RotationPeriodInDays must be an integer from 90 to 2560");
  CHECK_FALSE(ChooseRotationPeriod(-1, o).ok());
  CHECK(*ChoosePendingWindow(std::nullopt, o) == 30);
  CHECK_FALSE(ChoosePendingWindow(6, o).ok());
  CHECK_FALSE(ChoosePendingWindow(31, o).ok());
  CHECK(NextRotationDate(1000, 2, o) == 1000 + 2 * kDay);
  CHECK(DeletionDate(1000, 7) == 1000 + 7 * kDay);
  o.rotation_day_seconds = 1;
  CHECK(NextRotationDate(1000, 2, o) == 1002);
  CHECK(NextRotationDate(std::numeric_limits<int64_t>::max() - 1, 5, o) ==
        std::numeric_limits<int64_t>::max());

  ScheduleOptions bad;
  bad.min_rotation_period_days = 0;
  CHECK_FALSE(ValidateScheduleOptions(bad).ok());
  bad = ScheduleOptions{};
  bad.max_rotation_period_days = 3000;
  CHECK_FALSE(ValidateScheduleOptions(bad).ok());
  bad = ScheduleOptions{};
  bad.default_pending_window_days = 3;
  CHECK_FALSE(ValidateScheduleOptions(bad).ok());
  bad = ScheduleOptions{};
  bad.rotation_day_seconds = 0;
  CHECK_FALSE(ValidateScheduleOptions(bad).ok());
}

TEST_CASE("PlanScheduledWork: what is due, in order, bounded", "[rotation][schedule]") {
  auto key = [](std::string id, KeyState state) {
    KeyRecord k;
    k.key_id = std::move(id);
    k.key_state = state;
    return k;
  };
  std::vector<KeyRecord> keys;
  KeyRecord a = key("a", KeyState::kEnabled);
  a.rotation_enabled = true;
  a.next_rotation_date = 50;
  KeyRecord b = key("b", KeyState::kEnabled);
  b.rotation_enabled = true;
  b.next_rotation_date = 10;
  KeyRecord c = key("c", KeyState::kDisabled);  // disabled: never rotates
  c.rotation_enabled = true;
  c.next_rotation_date = 1;
  KeyRecord d = key("d", KeyState::kPendingDeletion);
  d.deletion_date = 100;
  KeyRecord e = key("e", KeyState::kPendingDeletion);
  e.deletion_date = 101;  // not yet
  KeyRecord f = key("f", KeyState::kEnabled);
  f.rotation_enabled = true;
  f.next_rotation_date = 101;  // not yet
  keys = {a, b, c, d, e, f};

  CHECK(RotationDue(a, 100));
  CHECK_FALSE(RotationDue(c, 100));
  CHECK(DeletionDue(d, 100));
  CHECK_FALSE(DeletionDue(e, 100));
  CHECK_FALSE(DeletionDue(a, 100));

  ScheduledWorkPlan p = PlanScheduledWork(keys, 100, 10);
  CHECK(p.destroy == std::vector<std::string>{"d"});
  CHECK(p.rotate == std::vector<std::string>{"b", "a"});  // oldest due first
  p = PlanScheduledWork(keys, 100, 2);
  CHECK(p.destroy == std::vector<std::string>{"d"});
  CHECK(p.rotate == std::vector<std::string>{"b"});
  p = PlanScheduledWork(keys, 0, 10);
  CHECK(p.destroy.empty());
  CHECK(p.rotate.empty());
}

}  // namespace
}  // namespace kmsfs::keyd
