// Issue 3: "With a short rotation period set for the test, keys gain versions on schedule; data
// wrapped under every version still decrypts; new data keys are wrapped under the newest."
// keyd runs with one rotation "day" = 1 s (--test-rotation-day-seconds) and a 0.1 s scheduler;
// versions are awaited by polling ListKeyRotations against a deadline.
#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/base/bytes.h"
#include "common/format/wrapped_blob.h"
#include "common/ipc/deadline.h"
#include "common/ipc/keyd_client.h"
#include "tests/catch.h"
#include "tests/integration/harness.h"

namespace kmsfs::it {
namespace {

using nlohmann::json;

json CallOk(ipc::KeydClient& client, ipc::Op op, json params) {
  auto r = client.Call(op, std::move(params));
  INFO((r.ok() ? std::string("ok") : r.error().ToString()));
  REQUIRE(r.ok());
  return *r;
}

// The rotations list of `key` (it stays well under one page here).
json Rotations(ipc::KeydClient& client, const std::string& key) {
  json r = CallOk(client, ipc::Op::kListKeyRotations, {{"KeyId", key}, {"Limit", 1000}});
  REQUIRE(r["Truncated"] == false);
  return r["Rotations"];
}

uint32_t Newest(const json& rotations) {
  uint32_t v = 1;  // the initial version is not listed
  for (const auto& r : rotations) v = std::max(v, r["KeyVersion"].get<uint32_t>());
  return v;
}

// Polls until `key` has at least `version` versions; REQUIREs it within `timeout`.
uint32_t WaitForVersion(ipc::KeydClient& client, const std::string& key, uint32_t version,
                        std::chrono::milliseconds timeout) {
  const auto deadline = ipc::Deadline::After(timeout);
  for (;;) {
    const uint32_t newest = Newest(Rotations(client, key));
    if (newest >= version) return newest;
    INFO("key " << key << " still at version " << newest << ", waiting for " << version);
    REQUIRE_FALSE(deadline.Expired());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // poll interval, not a wait
  }
}

struct Wrapped {
  Bytes blob;
  Bytes plaintext;
  uint32_t version;
};

TEST_CASE("with a short rotation period keys gain versions on schedule", "[keyd][rotation]") {
  Sandbox box;
  auto keyd = box.StartKeyd(KeydArgs({"--test-rotation-day-seconds", "1",
                                      "--min-rotation-period-days", "1", "--scheduler-interval",
                                      "0.1"}));
  ipc::KeydClient client(box.socket_path());
  const ipc::EncryptionContext ctx = {{"kmsfs:volume", "schedule"}};

  const std::string key = CallOk(client, ipc::Op::kCreateKey, {{"Description", "scheduled"}})
                              ["KeyMetadata"]["KeyId"]
                                  .get<std::string>();
  const std::string still = CallOk(client, ipc::Op::kCreateKey, {{"Description", "unscheduled"}})
                                ["KeyMetadata"]["KeyId"]
                                    .get<std::string>();

  std::vector<Wrapped> wrapped;
  auto generate = [&](uint32_t expected_at_least) {
    const uint32_t before = Newest(Rotations(client, key));
    auto dk = client.GenerateDataKey(key, ctx);
    INFO((dk.ok() ? std::string("ok") : dk.error().ToString()));
    REQUIRE(dk.ok());
    const uint32_t after = Newest(Rotations(client, key));
    auto peek = format::PeekWrappedBlobKey(dk->ciphertext_blob);
    REQUIRE(peek.ok());
    CHECK(peek->first == key);
    const uint32_t v = peek->second;
    INFO("blob version " << v << "; newest before " << before << ", after " << after);
    // Wrapped under the newest version at the moment it was made: a scheduled rotation may fall
    // between our ListKeyRotations calls, but never is an older version used.
    CHECK(v >= before);
    CHECK(v <= after);
    CHECK(v >= expected_at_least);
    if (before == after) CHECK(v == after);
    wrapped.push_back({dk->ciphertext_blob,
                       Bytes(dk->plaintext.span().begin(), dk->plaintext.span().end()), v});
  };

  generate(1);
  CHECK(Rotations(client, key).empty());

  // Every 1 "day" (1 s here). The period number is stored as is; only the unit is shortened.
  CallOk(client, ipc::Op::kEnableKeyRotation, {{"KeyId", key}, {"RotationPeriodInDays", 1}});
  json status = CallOk(client, ipc::Op::kGetKeyRotationStatus, {{"KeyId", key}});
  CHECK(status["KeyRotationEnabled"] == true);
  CHECK(status["RotationPeriodInDays"] == 1);
  REQUIRE(status.contains("NextRotationDate"));

  constexpr uint32_t kVersions = 4;
  for (uint32_t v = 2; v <= kVersions; ++v) {
    WaitForVersion(client, key, v, std::chrono::milliseconds(15'000));
    generate(v);
  }

  const json rotations = Rotations(client, key);
  REQUIRE(rotations.size() >= kVersions - 1);
  int64_t last_date = 0;
  uint32_t expected_version = 2;
  for (const auto& r : rotations) {
    INFO(r.dump());
    CHECK(r["KeyId"] == key);
    CHECK(r["RotationType"] == "AUTOMATIC");
    CHECK(r["KeyVersion"] == expected_version++);
    CHECK(r["KeyVersionState"].is_string());
    CHECK(r["RotationDate"].get<int64_t>() >= last_date);
    last_date = r["RotationDate"].get<int64_t>();
  }
  // Versions come one period apart (the scheduler does not rotate twice per period).
  if (rotations.size() >= 3) {
    const int64_t first = rotations[0]["RotationDate"].get<int64_t>();
    const int64_t third = rotations[2]["RotationDate"].get<int64_t>();
    CHECK(third - first >= 1);
  }
  // Each wrapped blob names a distinct version: one under every version 1..kVersions.
  std::vector<uint32_t> versions;
  for (const auto& w : wrapped) versions.push_back(w.version);
  for (uint32_t v = 1; v <= kVersions; ++v) {
    INFO("no blob under version " << v);
    CHECK(std::count(versions.begin(), versions.end(), v) >= 1);
  }

  // Data wrapped under every version still decrypts.
  for (const auto& w : wrapped) {
    auto d = client.Decrypt(w.blob, ctx);
    INFO("version " << w.version << ": " << (d.ok() ? std::string("ok") : d.error().ToString()));
    REQUIRE(d.ok());
    CHECK(d->key_id == key);
    CHECK(Bytes(d->plaintext.span().begin(), d->plaintext.span().end()) == w.plaintext);
  }

  // ReEncrypt to the same key moves the oldest blob to the newest version.
  auto re = client.ReEncrypt(wrapped.front().blob, ctx, key, ctx);
  REQUIRE(re.ok());
  auto peek = format::PeekWrappedBlobKey(re->ciphertext_blob);
  REQUIRE(peek.ok());
  CHECK(peek->second >= kVersions);
  CHECK(peek->second <= Newest(Rotations(client, key)));

  // A key without a schedule never rotated.
  CHECK(Rotations(client, still).empty());
  CHECK(CallOk(client, ipc::Op::kGetKeyRotationStatus, {{"KeyId", still}})["KeyRotationEnabled"] ==
        false);

  // The schedule survives a restart and keeps rotating afterwards.
  const uint32_t newest = Newest(Rotations(client, key));
  REQUIRE(keyd->Stop() == 0);
  keyd = box.StartKeyd(KeydArgs({"--test-rotation-day-seconds", "1", "--min-rotation-period-days",
                                 "1", "--scheduler-interval", "0.1"}));
  WaitForVersion(client, key, newest + 1, std::chrono::milliseconds(15'000));
  generate(newest + 1);
  for (const auto& w : wrapped) CHECK(client.Decrypt(w.blob, ctx).ok());

  CHECK(keyd->Stop() == 0);
  CheckLog(keyd->Log(), {}, {box.root_key_hex()});
}

}  // namespace
}  // namespace kmsfs::it
