// Issue 3's crash acceptance test: kmsfs-keyd is killed with SIGKILL at random moments (100
// rounds; KMSFS_CRASH_ROUNDS changes it, KMSFS_CRASH_SEED replays a run) while two clients stream
// CreateKey, RotateKeyOnDemand and GenerateDataKey. After every kill keyd must reopen its store
// and every operation that was ACKNOWLEDGED must be there: the key, at least that many rotations,
// and every returned CiphertextBlob decrypting (same context) to the plaintext that came with it.
//
// Each restart both verifies the previous round and serves the next round's stream. Per round
// the previous round's acknowledgements are all checked, plus a random sample of older ones; after
// the last kill everything ever acknowledged is checked.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/base/bytes.h"
#include "common/format/wrapped_blob.h"
#include "common/ipc/keyd_client.h"
#include "tests/catch.h"
#include "tests/integration/harness.h"

namespace kmsfs::it {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct AckedBlob {
  std::string key_id;
  Bytes blob;
  ipc::EncryptionContext context;
  Bytes plaintext;
  uint32_t version = 0;  // the version named inside the blob
};

// Everything keyd acknowledged, by round.
struct Acked {
  std::mutex mu;
  std::vector<std::string> keys;                 // in creation order
  std::map<std::string, size_t> key_round;       // key id -> round of its CreateKey ack
  std::map<std::string, uint32_t> rotations;     // key id -> acknowledged RotateKeyOnDemand count
  std::map<std::string, size_t> rotation_round;  // key id -> last round with a rotation ack
  std::vector<std::pair<size_t, AckedBlob>> blobs;  // (round, blob)
};

size_t EnvSize(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return static_cast<size_t>(std::strtoull(v, nullptr, 10));
}

// A transport failure is the expected effect of the kill; anything else is a keyd answer that a
// well-formed request must never get.
struct Stream {
  Acked* acked;
  size_t round;
  std::atomic<bool>* stop;
  std::atomic<uint64_t>* counter;
  std::mutex* unexpected_mu;
  std::vector<std::string>* unexpected;

  void Note(const std::string& what, const Error& e) {
    if (e.code() == Code::kUnavailable) return;  // keyd gone (or going): not acknowledged
    std::lock_guard lock(*unexpected_mu);
    unexpected->push_back(what + ": " + e.ToString());
  }

  void Run(const std::string& socket_path, uint64_t seed) {
    ipc::KeydClientOptions options;
    options.call_timeout = std::chrono::milliseconds(5'000);
    ipc::KeydClient client(socket_path, options);
    std::mt19937_64 rng(seed);
    while (!stop->load()) {
      std::string key;
      {
        std::lock_guard lock(acked->mu);
        if (!acked->keys.empty()) key = acked->keys[rng() % acked->keys.size()];
      }
      const unsigned dice = static_cast<unsigned>(rng() % 10);
      if (key.empty() || dice < 2) {
        auto r = client.Call(ipc::Op::kCreateKey, {{"Description", "crash"}});
        if (!r.ok()) {
          Note("CreateKey", r.error());
          if (r.error().code() == Code::kUnavailable) return;
          continue;
        }
        std::lock_guard lock(acked->mu);
        const std::string id = (*r)["KeyMetadata"]["KeyId"].get<std::string>();
        acked->keys.push_back(id);
        acked->key_round[id] = round;
      } else if (dice < 4) {
        auto r = client.Call(ipc::Op::kRotateKeyOnDemand, {{"KeyId", key}});
        if (!r.ok()) {
          Note("RotateKeyOnDemand " + key, r.error());
          if (r.error().code() == Code::kUnavailable) return;
          continue;
        }
        std::lock_guard lock(acked->mu);
        ++acked->rotations[key];
        acked->rotation_round[key] = round;
      } else {
        const uint64_t n = counter->fetch_add(1);
        ipc::EncryptionContext ctx = {{"kmsfs:volume", "crash"}, {"n", std::to_string(n)}};
        auto r = client.GenerateDataKey(key, ctx);
        if (!r.ok()) {
          Note("GenerateDataKey " + key, r.error());
          if (r.error().code() == Code::kUnavailable) return;
          continue;
        }
        AckedBlob b;
        b.key_id = r->key_id;
        b.blob = r->ciphertext_blob;
        b.context = ctx;
        b.plaintext.assign(r->plaintext.span().begin(), r->plaintext.span().end());
        auto peek = format::PeekWrappedBlobKey(b.blob);
        if (peek.ok()) b.version = peek->second;
        std::lock_guard lock(acked->mu);
        acked->blobs.emplace_back(round, std::move(b));
      }
    }
  }
};

// All rotations of `key` (following NextMarker): (count of ON_DEMAND entries, highest version).
std::pair<uint32_t, uint32_t> Rotations(ipc::KeydClient& client, const std::string& key) {
  uint32_t on_demand = 0;
  uint32_t newest = 1;
  std::string marker;
  for (;;) {
    json params = {{"KeyId", key}, {"Limit", 1000}};
    if (!marker.empty()) params["Marker"] = marker;
    auto r = client.Call(ipc::Op::kListKeyRotations, params);
    INFO("ListKeyRotations " << key << ": " << (r.ok() ? "ok" : r.error().ToString()));
    REQUIRE(r.ok());
    for (const auto& rot : (*r)["Rotations"]) {
      if (rot["RotationType"] == "ON_DEMAND") ++on_demand;
      newest = std::max(newest, rot["KeyVersion"].get<uint32_t>());
    }
    if (!(*r)["Truncated"].get<bool>()) break;
    marker = (*r)["NextMarker"].get<std::string>();
  }
  return {on_demand, newest};
}

// Checks the acknowledged state `acked` selects (all when `everything`, else round `round` and a
// sample of `sample` older items) against a freshly restarted keyd.
void Verify(ipc::KeydClient& client, Acked& acked, size_t round, bool everything, size_t sample,
            std::mt19937_64& rng) {
  std::lock_guard lock(acked.mu);  // the stream threads have been joined; for the analyzer only
  auto chosen = [&](size_t item_round) {
    return everything || item_round == round || (sample > 0 && rng() % 64 == 0);
  };
  size_t checked_keys = 0;
  size_t checked_blobs = 0;
  std::map<std::string, uint32_t> newest_version;
  for (const std::string& key : acked.keys) {
    const bool rotated_now =
        acked.rotation_round.count(key) != 0 && acked.rotation_round.at(key) == round;
    if (!chosen(acked.key_round.at(key)) && !rotated_now) continue;
    ++checked_keys;
    auto d = client.Call(ipc::Op::kDescribeKey, {{"KeyId", key}});
    INFO("round " << round << ": DescribeKey " << key << ": "
                  << (d.ok() ? "ok" : d.error().ToString()));
    REQUIRE(d.ok());
    CHECK((*d)["KeyMetadata"]["KeyState"] == "Enabled");
    const auto [on_demand, newest] = Rotations(client, key);
    INFO("acknowledged rotations: " << (acked.rotations.count(key) ? acked.rotations.at(key) : 0));
    CHECK(on_demand >= (acked.rotations.count(key) ? acked.rotations.at(key) : 0));
    newest_version[key] = newest;
  }
  for (const auto& [blob_round, b] : acked.blobs) {
    if (!chosen(blob_round)) continue;
    ++checked_blobs;
    auto r = client.Decrypt(b.blob, b.context);
    INFO("round " << round << ": Decrypt of a blob acknowledged in round " << blob_round
                  << " under " << b.key_id << " v" << b.version << ": "
                  << (r.ok() ? "ok" : r.error().ToString()));
    REQUIRE(r.ok());
    CHECK(r->key_id == b.key_id);
    CHECK(Bytes(r->plaintext.span().begin(), r->plaintext.span().end()) == b.plaintext);
    // The version the blob names exists (it is at most the newest one listed).
    if (newest_version.count(b.key_id)) CHECK(b.version <= newest_version.at(b.key_id));
  }
  if (everything) {
    // ListKeys knows every acknowledged key.
    std::set<std::string> listed;
    std::string marker;
    for (;;) {
      json params = {{"Limit", 1000}};
      if (!marker.empty()) params["Marker"] = marker;
      auto r = client.Call(ipc::Op::kListKeys, params);
      REQUIRE(r.ok());
      for (const auto& k : (*r)["Keys"]) listed.insert(k["KeyId"].get<std::string>());
      if (!(*r)["Truncated"].get<bool>()) break;
      marker = (*r)["NextMarker"].get<std::string>();
    }
    for (const std::string& key : acked.keys) {
      INFO("ListKeys misses " << key);
      CHECK(listed.count(key) == 1);
    }
  }
  std::fprintf(stderr, "  round %zu verified: %zu keys, %zu blobs\n", round, checked_keys,
               checked_blobs);
}

TEST_CASE("keyd killed with SIGKILL at random moments keeps every acknowledged operation",
          "[keyd][crash]") {
  const size_t rounds = EnvSize("KMSFS_CRASH_ROUNDS", 100);
  const uint64_t seed = EnvSize("KMSFS_CRASH_SEED", std::random_device{}());
  std::fprintf(stderr, "crash test: %zu rounds, seed %llu (replay: KMSFS_CRASH_SEED=%llu)\n",
               rounds, static_cast<unsigned long long>(seed),
               static_cast<unsigned long long>(seed));
  INFO("seed " << seed << " (KMSFS_CRASH_SEED replays it)");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> delay_ms(5, 150);

  Sandbox box;
  Acked acked;
  std::atomic<uint64_t> counter{0};
  std::mutex unexpected_mu;
  std::vector<std::string> unexpected;
  ipc::KeydClient verifier(box.socket_path());
  const auto start = Clock::now();
  size_t kills_mid_stream = 0;

  for (size_t round = 0; round <= rounds; ++round) {
    auto keyd = box.StartKeyd();  // REQUIREs READY=1: the store reopened after the kill
    if (round > 0) {
      Verify(verifier, acked, round - 1, /*everything=*/round == rounds, /*sample=*/1, rng);
    }
    if (round == rounds) {
      CHECK(keyd->Stop() == 0);
      CheckLog(keyd->Log(), {}, {box.root_key_hex()});
      break;
    }
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (uint64_t t = 0; t < 2; ++t) {
      threads.emplace_back([&, t, s = rng()] {
        Stream stream{&acked, round, &stop, &counter, &unexpected_mu, &unexpected};
        stream.Run(box.socket_path(), s + t);
      });
    }
    const int delay = delay_ms(rng);
    // The random moment of the kill: this sleep IS the test's input, not a readiness wait.
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    if (keyd->running()) ++kills_mid_stream;
    keyd->Kill9();
    stop = true;
    for (auto& th : threads) th.join();
    {
      std::lock_guard lock(unexpected_mu);
      INFO("round " << round << " (kill after " << delay << " ms)");
      for (const auto& u : unexpected) FAIL_CHECK("unexpected keyd error: " << u);
      REQUIRE(unexpected.empty());
    }
  }

  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  std::lock_guard lock(acked.mu);
  std::fprintf(stderr,
               "crash test: %zu kills (%zu mid-stream), %zu keys, %zu blobs acknowledged, "
               "%lld ms\n",
               rounds, kills_mid_stream, acked.keys.size(), acked.blobs.size(),
               static_cast<long long>(took.count()));
  CHECK(kills_mid_stream == rounds);
  CHECK_FALSE(acked.keys.empty());
  CHECK_FALSE(acked.blobs.empty());
}

}  // namespace
}  // namespace kmsfs::it
