// SIGKILL of a writing process at arbitrary instants never leaves an inconsistent store and never
// loses an acknowledged change (each mutating call is one durable LMDB transaction).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "keyd/store/key_store.h"
#include "tests/catch.h"
#include "tests/unit/keyd/store/store_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::TempDir;
using testing::TestRootKey;

// Every invariant the store promises between transactions.
void CheckConsistent(const KeyStore& store) {
  const Db material_db = store.env().OpenDb("material", false).value();
  auto txn = store.env().BeginRead().value();
  std::set<std::string> live_keys;
  std::string marker;
  do {
    auto page = store.ListKeys(1000, marker).value();
    for (const KeyRecord& k : page.items) {
      INFO("key " << k.key_id);
      REQUIRE(ValidateKeyRecord(k).ok());
      const std::vector<KeyVersion> versions = store.ListVersions(k.key_id).value();
      REQUIRE(versions.size() == k.primary_version);  // versions are 1..primary, no gaps
      for (size_t i = 0; i < versions.size(); ++i) {
        const KeyVersion& v = versions[i];
        CHECK(v.version == i + 1);
        const bool has_material = txn.Get(material_db, VersionKey(k.key_id, v.version)).ok();
        CHECK(has_material == (v.state != VersionState::kDestroyed));
        if (v.state == VersionState::kEnabled)
          CHECK(store.GetVersionMaterial(k.key_id, v.version).ok());
      }
      if (k.key_state != KeyState::kDestroyed) {
        CHECK(versions.back().state == VersionState::kEnabled);  // the primary is servable
        live_keys.insert(k.key_id);
      }
    }
    marker = page.next_marker;
  } while (!marker.empty());
  // No orphaned material and no dangling alias.
  REQUIRE(txn.Scan(material_db, "", "",
                   [&](std::string_view k, std::string_view) {
                     std::string id;
                     uint32_t v = 0;
                     CHECK(ParseVersionKey(k, &id, &v));
                     CHECK(live_keys.count(id) == 1);
                     return true;
                   })
              .ok());
  auto aliases = store.ListAliases(std::nullopt, 1000, "").value();
  for (const AliasRecord& a : aliases.items) CHECK(live_keys.count(a.target_key_id) == 1);
}

// The child: mutates the store forever, acknowledging each committed change on `ack_fd`.
[[noreturn]] void Writer(const std::string& dir, int ack_fd, int round) {
  auto opened = KeyStore::Open(dir, TestRootKey(1));
  if (!opened.ok()) ::_exit(2);
  KeyStore& store = **opened;
  for (int i = 0;; ++i) {
    auto k = store.CreateKey("crash " + std::to_string(round) + "/" + std::to_string(i), {}, "{}");
    if (!k.ok()) ::_exit(3);
    if (!store.AddVersion(k->key_id, RotationType::kOnDemand).ok()) ::_exit(4);
    const std::string alias = "alias/r" + std::to_string(round) + "-" + std::to_string(i);
    if (!store.CreateAlias(alias, k->key_id).ok()) ::_exit(5);
    if (!store.RetireVersion(k->key_id, 1).ok()) ::_exit(6);
    // Acknowledged: all four transactions above are durable.
    const std::string line = k->key_id + " " + alias + "\n";
    if (::write(ack_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) ::_exit(7);
  }
}

TEST_CASE("SIGKILL at any instant leaves a consistent store with every acked change",
          "[store][crash]") {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  { REQUIRE(KeyStore::Open(dir, TestRootKey(1)).ok()); }
  std::mt19937 rng(12345);
  std::vector<std::pair<std::string, std::string>> acked;

  for (int round = 0; round < 4; ++round) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      Writer(dir, fds[1], round);
    }
    ::close(fds[1]);
    // Wait for a few acknowledgements, then kill it at a random point in its stream of
    // transactions (each ack covers four commits of a few ms each).
    std::string acks;
    char buf[4096];
    ssize_t n = 0;
    const size_t want_lines = 2 + static_cast<size_t>(round);
    while (static_cast<size_t>(std::count(acks.begin(), acks.end(), '\n')) < want_lines &&
           (n = ::read(fds[0], buf, sizeof buf)) > 0) {
      acks.append(buf, static_cast<size_t>(n));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 30'000));
    REQUIRE(::kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFSIGNALED(status));  // it did not exit on an error of its own
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) acks.append(buf, static_cast<size_t>(n));
    ::close(fds[0]);
    size_t start = 0;
    for (size_t nl; (nl = acks.find('\n', start)) != std::string::npos; start = nl + 1) {
      const std::string line = acks.substr(start, nl - start);
      const size_t sp = line.find(' ');
      acked.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    }

    auto store = KeyStore::Open(dir, TestRootKey(1));  // also clears the dead writer's slots
    REQUIRE(store.ok());
    CheckConsistent(**store);
    for (const auto& [key_id, alias] : acked) {
      auto k = (*store)->GetKey(alias);
      REQUIRE(k.ok());
      CHECK(k->key_id == key_id);
      CHECK(k->primary_version == 2);
      CHECK((*store)->GetVersionMaterial(key_id, 1).status().code() == Code::kKeyUnavailable);
    }
  }
  INFO("acknowledged changes: " << acked.size());
  CHECK(acked.size() > 0);
}

}  // namespace
}  // namespace kmsfs::keyd
