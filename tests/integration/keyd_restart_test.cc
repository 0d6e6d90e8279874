// Issue 3: "Restarting keyd keeps keys, aliases, versions, states and rotation schedules" — all
// observed through the real kmsctl, before and after a clean stop (SIGTERM) and after SIGKILL.
#include <string>
#include <vector>

#include "tests/catch.h"
#include "tests/integration/harness.h"

namespace kmsfs::it {
namespace {

using nlohmann::json;

json CtlOk(Sandbox& box, const std::vector<std::string>& args) {
  auto r = box.Ctl(args);
  INFO("kmsctl " << args[0] << ": exit " << r.exit_code << " " << r.err);
  REQUIRE(r.exit_code == 0);
  return r.json;
}

// Everything a restart must keep, as kmsctl shows it.
json Snapshot(Sandbox& box, const std::vector<std::string>& keys) {
  json snap;
  snap["ListKeys"] = CtlOk(box, {"list-keys"});
  snap["ListAliases"] = CtlOk(box, {"list-aliases"});
  for (const auto& key : keys) {
    snap[key]["DescribeKey"] = CtlOk(box, {"describe-key", "--key-id", key});
    snap[key]["ListKeyRotations"] = CtlOk(box, {"list-key-rotations", "--key-id", key});
    snap[key]["GetKeyRotationStatus"] = CtlOk(box, {"get-key-rotation-status", "--key-id", key});
    snap[key]["GetKeyPolicy"] = CtlOk(box, {"get-key-policy", "--key-id", key});
  }
  return snap;
}

TEST_CASE("restarting keyd keeps keys, aliases, versions, states and rotation schedules",
          "[keyd][restart]") {
  Sandbox box;
  auto keyd = box.StartKeyd();

  auto create = [&](const std::string& description) {
    return CtlOk(box, {"create-key", "--description", description})["KeyMetadata"]["KeyId"]
        .get<std::string>();
  };
  const std::string enabled = create("enabled, rotated, scheduled");
  const std::string disabled = create("disabled");
  const std::string pending = create("pending deletion");
  const std::string plain = create("untouched");
  const std::vector<std::string> keys = {enabled, disabled, pending, plain};

  CtlOk(box, {"create-alias", "--alias-name", "alias/restart/enabled", "--target-key-id", enabled});
  CtlOk(box, {"create-alias", "--alias-name", "alias/restart/moved", "--target-key-id", plain});
  CtlOk(box, {"update-alias", "--alias-name", "alias/restart/moved", "--target-key-id", disabled});
  CtlOk(box, {"create-alias", "--alias-name", "alias/restart/pending", "--target-key-id", pending});

  // Versions: a blob under every version of `enabled`.
  std::vector<std::pair<std::string, std::string>> blobs;  // (CiphertextBlob, Plaintext), base64
  auto wrap = [&](const std::string& key) {
    auto dk = CtlOk(box, {"generate-data-key", "--key-id", key, "--encryption-context",
                          "kmsfs:volume=restart"});
    blobs.emplace_back(dk["CiphertextBlob"].get<std::string>(), dk["Plaintext"].get<std::string>());
  };
  wrap("alias/restart/enabled");
  CtlOk(box, {"rotate-key-on-demand", "--key-id", enabled});
  wrap(enabled);
  CtlOk(box, {"rotate-key-on-demand", "--key-id", "alias/restart/enabled"});
  wrap(enabled);
  wrap(disabled);  // before it is disabled
  wrap(pending);

  // Rotation schedules.
  CtlOk(box, {"enable-key-rotation", "--key-id", enabled, "--rotation-period-in-days", "100"});
  CtlOk(box, {"enable-key-rotation", "--key-id", disabled, "--rotation-period-in-days", "2560"});
  // States.
  CtlOk(box, {"disable-key", "--key-id", disabled});
  auto scheduled =
      CtlOk(box, {"schedule-key-deletion", "--key-id", pending, "--pending-window-in-days", "7"});
  CHECK(scheduled["KeyState"] == "PendingDeletion");

  const json before = Snapshot(box, keys);
  REQUIRE(before[enabled]["ListKeyRotations"]["Rotations"].size() == 2);
  REQUIRE(before[enabled]["GetKeyRotationStatus"]["KeyRotationEnabled"] == true);
  REQUIRE(before[enabled]["GetKeyRotationStatus"]["RotationPeriodInDays"] == 100);
  REQUIRE(before[disabled]["DescribeKey"]["KeyMetadata"]["KeyState"] == "Disabled");
  REQUIRE(before[pending]["DescribeKey"]["KeyMetadata"]["KeyState"] == "PendingDeletion");
  REQUIRE(before[plain]["GetKeyRotationStatus"]["KeyRotationEnabled"] == false);

  // What the states mean must survive too, not just their names.
  auto check_behaviour = [&] {
    for (size_t i = 0; i < blobs.size(); ++i) {
      auto d = box.Ctl({"decrypt", "--ciphertext-blob", blobs[i].first, "--encryption-context",
                        "kmsfs:volume=restart"});
      INFO("blob " << i << ": " << d.err);
      if (i == 3) {  // under the disabled key
        CHECK(d.exit_code == 5);
        CHECK(d.err.find("DisabledException") != std::string::npos);
      } else if (i == 4) {  // under the key pending deletion
        CHECK(d.exit_code == 5);
        CHECK(d.err.find("KMSInvalidStateException") != std::string::npos);
      } else {
        REQUIRE(d.exit_code == 0);
        CHECK(d.json["Plaintext"] == blobs[i].second);
      }
    }
    auto moved = box.Ctl({"generate-data-key", "--key-id", "alias/restart/moved"});
    CHECK(moved.exit_code == 5);  // the alias now names the disabled key
    CHECK(moved.err.find("DisabledException") != std::string::npos);
    // New data keys go under the newest version (3).
    auto fresh = box.Ctl({"re-encrypt", "--ciphertext-blob", blobs[0].first,
                          "--source-encryption-context", "kmsfs:volume=restart",
                          "--destination-encryption-context", "kmsfs:volume=restart",
                          "--destination-key-id", "alias/restart/enabled"});
    INFO(fresh.err);
    REQUIRE(fresh.exit_code == 0);
    CHECK(fresh.json["SourceKeyVersion"] == 1);
    CHECK(fresh.json["KeyVersion"] == 3);
  };
  check_behaviour();

  SECTION("a clean stop (SIGTERM), then SIGKILL") {
    REQUIRE(keyd->Stop() == 0);
    keyd = box.StartKeyd();
    CHECK(Snapshot(box, keys) == before);
    check_behaviour();

    keyd->Kill9();
    keyd = box.StartKeyd();
    CHECK(Snapshot(box, keys) == before);
    check_behaviour();

    // The states still work as states after two restarts.
    auto cancel = CtlOk(box, {"cancel-key-deletion", "--key-id", pending});
    CHECK(cancel["KeyId"] == pending);
    CHECK(CtlOk(box, {"describe-key", "--key-id", pending})["KeyMetadata"]["KeyState"] ==
          "Disabled");
    CtlOk(box, {"enable-key", "--key-id", disabled});
    auto d = box.Ctl({"decrypt", "--ciphertext-blob", blobs[3].first, "--encryption-context",
                      "kmsfs:volume=restart"});
    CHECK(d.exit_code == 0);
    CHECK(d.json["Plaintext"] == blobs[3].second);
  }
  SECTION("SIGKILL straight after the last change") {
    keyd->Kill9();
    keyd = box.StartKeyd();
    CHECK(Snapshot(box, keys) == before);
    check_behaviour();
  }

  CHECK(keyd->Stop() == 0);
  std::vector<std::string> secrets = {box.root_key_hex()};
  CheckLog(keyd->Log(), {}, secrets);
}

}  // namespace
}  // namespace kmsfs::it
