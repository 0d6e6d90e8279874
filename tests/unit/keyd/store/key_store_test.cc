#include "keyd/store/key_store.h"

#include <sys/stat.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "keyd/store/records.h"
#include "tests/catch.h"
#include "tests/unit/keyd/store/store_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::FakeClock;
using testing::ModeOf;
using testing::Sha256Hex;
using testing::TempDir;
using testing::TestRootKey;

constexpr int64_t kDay = 86400;

std::unique_ptr<KeyStore> OpenStore(const std::string& dir, const crypto::RootKey& root,
                                    FakeClock* clock = nullptr) {
  KeyStore::Options options;
  if (clock != nullptr) options.clock = clock->Fn();
  auto store = KeyStore::Open(dir, root, std::move(options));
  if (!store.ok()) FAIL(store.error().ToString());
  return std::move(store).value();
}

// The material of every Enabled version, for before/after comparisons (test-only, hex is fine).
std::map<std::string, std::string> AllMaterial(const KeyStore& store) {
  std::map<std::string, std::string> out;
  auto keys = store.ListKeys(1000, "").value();
  for (const KeyRecord& k : keys.items) {
    // A named local: a range-for over a temporary Result's value() would dangle (C++20).
    const std::vector<KeyVersion> versions = store.ListVersions(k.key_id).value();
    for (const KeyVersion& v : versions) {
      if (v.state != VersionState::kEnabled) continue;
      auto m = store.GetVersionMaterial(k.key_id, v.version);
      REQUIRE(m.ok());
      out[VersionKey(k.key_id, v.version)] = HexEncode(m->span());
    }
  }
  return out;
}

TEST_CASE("create, get and list keys", "[store][keys]") {
  TempDir tmp;
  FakeClock clock;
  auto store = OpenStore(tmp.path(), TestRootKey(1), &clock);

  auto k = store->CreateKey("first", {{"team", "hr"}}, R"({"Statement":[]})");
  REQUIRE(k.ok());
  CHECK(IsValidKeyId(k->key_id));
  CHECK(k->key_state == KeyState::kEnabled);
  CHECK(k->creation_date == clock.now);
  CHECK(k->primary_version == 1);
  CHECK(k->key_usage == "ENCRYPT_DECRYPT");
  CHECK(k->key_spec == "SYMMETRIC_DEFAULT");
  CHECK(k->origin == "KMSFS");
  CHECK(store->GetKey(k->key_id).value() == *k);

  auto versions = store->ListVersions(k->key_id).value();
  REQUIRE(versions.size() == 1);
  CHECK(versions[0].version == 1);
  CHECK(versions[0].rotation_type == RotationType::kInitial);
  CHECK(versions[0].state == VersionState::kEnabled);
  auto material = store->GetVersionMaterial(k->key_id, 1);
  REQUIRE(material.ok());
  auto primary = store->GetKeyMaterial(k->key_id);
  REQUIRE(primary.ok());
  CHECK(primary->version == 1);
  CHECK(primary->material == *material);

  CHECK(store->GetKey("1f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9").status().code() == Code::kNotFound);
  CHECK(store->GetKey("not-a-key").status().code() == Code::kInvalidArgument);
  CHECK(store->GetVersionMaterial(k->key_id, 2).status().code() == Code::kNotFound);
  CHECK(store->CreateKey("", {{"a", "1"}, {"a", "2"}}, "").status().code() ==
        Code::kInvalidArgument);

  SECTION("pagination visits every key once, in order") {
    std::set<std::string> created = {k->key_id};
    for (int i = 0; i < 11; ++i) created.insert(store->CreateKey("k", {}, "").value().key_id);
    std::vector<std::string> seen;
    std::string marker;
    int pages = 0;
    do {
      auto page = store->ListKeys(5, marker);
      REQUIRE(page.ok());
      CHECK(page->items.size() <= 5);
      for (const KeyRecord& r : page->items) seen.push_back(r.key_id);
      marker = page->next_marker;
      ++pages;
    } while (!marker.empty());
    CHECK(pages == 3);  // 5 + 5 + 2
    CHECK(seen == std::vector<std::string>(created.begin(), created.end()));
    CHECK(store->ListKeys(12, "").value().next_marker.empty());
    CHECK(store->ListKeys(0, "").status().code() == Code::kInvalidArgument);
    CHECK(store->ListKeys(1001, "").status().code() == Code::kInvalidArgument);
    CHECK(store->ListKeys(5, "garbage").status().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("aliases: create, resolve, update, delete, list, validation", "[store][aliases]") {
  TempDir tmp;
  auto store = OpenStore(tmp.path(), TestRootKey(1));
  const KeyRecord a = store->CreateKey("a", {}, "").value();
  const KeyRecord b = store->CreateKey("b", {}, "").value();

  REQUIRE(store->CreateAlias("alias/payroll", a.key_id).ok());
  CHECK(store->GetKey("alias/payroll").value().key_id == a.key_id);
  CHECK(store->GetKeyMaterial("alias/payroll").value().key.key_id == a.key_id);
  CHECK(store->CreateAlias("alias/payroll", b.key_id).status().code() == Code::kAlreadyExists);
  CHECK(store->CreateAlias("alias/aws/ebs", a.key_id).status().code() == Code::kInvalidArgument);
  CHECK(store->CreateAlias("alias/bad name", a.key_id).status().code() == Code::kInvalidArgument);
  CHECK(store->CreateAlias("payroll", a.key_id).status().code() == Code::kInvalidArgument);
  CHECK(store->CreateAlias("alias/x", "alias/payroll").status().code() == Code::kInvalidArgument);
  CHECK(store->CreateAlias("alias/x", "1f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9").status().code() ==
        Code::kNotFound);
  CHECK(store->GetKey("alias/nothing").status().code() == Code::kNotFound);

  REQUIRE(store->UpdateAlias("alias/payroll", b.key_id).ok());
  CHECK(store->GetKey("alias/payroll").value().key_id == b.key_id);
  CHECK(store->UpdateAlias("alias/none", b.key_id).status().code() == Code::kNotFound);

  REQUIRE(store->CreateAlias("alias/a1", a.key_id).ok());
  REQUIRE(store->CreateAlias("alias/a2", a.key_id).ok());
  REQUIRE(store->CreateAlias("alias/a3", a.key_id).ok());
  auto all = store->ListAliases(std::nullopt, 100, "").value();
  CHECK(all.items.size() == 4);
  CHECK(all.next_marker.empty());
  auto of_a = store->ListAliases(a.key_id, 2, "").value();
  REQUIRE(of_a.items.size() == 2);
  CHECK(of_a.items[0].alias_name == "alias/a1");
  CHECK(of_a.items[1].alias_name == "alias/a2");
  REQUIRE(of_a.next_marker == "alias/a2");
  auto rest = store->ListAliases(a.key_id, 2, of_a.next_marker).value();
  REQUIRE(rest.items.size() == 1);
  CHECK(rest.items[0].alias_name == "alias/a3");
  CHECK(rest.next_marker.empty());

  REQUIRE(store->DeleteAlias("alias/a1").ok());
  CHECK(store->DeleteAlias("alias/a1").code() == Code::kNotFound);
  CHECK(store->GetKey("alias/a1").status().code() == Code::kNotFound);
}

TEST_CASE("rotation adds versions; old versions still unseal", "[store][rotation]") {
  TempDir tmp;
  FakeClock clock;
  auto store = OpenStore(tmp.path(), TestRootKey(1), &clock);
  const KeyRecord k = store->CreateKey("rotating", {}, "").value();
  const std::string v1 = HexEncode(store->GetVersionMaterial(k.key_id, 1).value().span());

  auto v2 = store->AddVersion(k.key_id, RotationType::kOnDemand);
  REQUIRE(v2.ok());
  CHECK(*v2 == 2);
  auto v3 = store->AddVersion(k.key_id, RotationType::kAutomatic, [&](KeyRecord& r) {
    r.rotation_enabled = true;
    r.rotation_period_in_days = 90;
    r.next_rotation_date = clock.now + 90 * kDay;
    return Status::Ok();
  });
  REQUIRE(v3.ok());
  CHECK(*v3 == 3);

  const KeyRecord after = store->GetKey(k.key_id).value();
  CHECK(after.primary_version == 3);
  CHECK(after.rotation_enabled);
  auto versions = store->ListVersions(k.key_id).value();
  REQUIRE(versions.size() == 3);
  CHECK(versions[1].rotation_type == RotationType::kOnDemand);
  CHECK(versions[2].rotation_type == RotationType::kAutomatic);

  // Every version still unseals, v1 to the same bytes as before; all three differ.
  CHECK(HexEncode(store->GetVersionMaterial(k.key_id, 1).value().span()) == v1);
  auto m2 = store->GetVersionMaterial(k.key_id, 2).value();
  auto m3 = store->GetKeyMaterial(k.key_id).value();
  CHECK(m3.version == 3);
  CHECK_FALSE(m2 == m3.material);
  CHECK(HexEncode(m2.span()) != v1);

  CHECK(store->AddVersion(k.key_id, RotationType::kInitial).status().code() ==
        Code::kInvalidArgument);
  CHECK(store
            ->AddVersion(k.key_id, RotationType::kOnDemand,
                         [](KeyRecord& r) {
                           r.primary_version = 7;
                           return Status::Ok();
                         })
            .status()
            .code() == Code::kInvalidArgument);
  CHECK(store->GetKey(k.key_id).value().primary_version == 3);  // the failed ones left no trace
  CHECK(store->ListVersions(k.key_id).value().size() == 3);

  SECTION("due for rotation") {
    CHECK(store->KeysDueForRotation(clock.now).value().empty());
    CHECK(store->KeysDueForRotation(clock.now + 90 * kDay).value() ==
          std::vector<std::string>{k.key_id});
  }
}

TEST_CASE("retire and destroy versions", "[store][versions]") {
  TempDir tmp;
  auto store = OpenStore(tmp.path(), TestRootKey(1));
  const KeyRecord k = store->CreateKey("k", {}, "").value();
  REQUIRE(store->AddVersion(k.key_id, RotationType::kOnDemand).ok());

  CHECK(store->RetireVersion(k.key_id, 2).code() == Code::kFailedPrecondition);   // primary
  CHECK(store->DestroyVersion(k.key_id, 1).code() == Code::kFailedPrecondition);  // not retired
  CHECK(store->RetireVersion(k.key_id, 9).code() == Code::kNotFound);

  REQUIRE(store->RetireVersion(k.key_id, 1).ok());
  REQUIRE(store->RetireVersion(k.key_id, 1).ok());  // idempotent
  CHECK(store->GetVersionMaterial(k.key_id, 1).status().code() == Code::kKeyUnavailable);
  CHECK(store->GetKeyMaterial(k.key_id, 1).status().code() == Code::kKeyUnavailable);
  CHECK(store->GetVersionMaterial(k.key_id, 2).ok());

  REQUIRE(store->DestroyVersion(k.key_id, 1).ok());
  REQUIRE(store->DestroyVersion(k.key_id, 1).ok());  // idempotent
  CHECK(store->GetVersionMaterial(k.key_id, 1).status().code() == Code::kKeyUnavailable);
  CHECK(store->RetireVersion(k.key_id, 1).code() == Code::kFailedPrecondition);
  auto versions = store->ListVersions(k.key_id).value();
  CHECK(versions[0].state == VersionState::kDestroyed);
  CHECK(versions[0].destruction_date.has_value());
  // The sealed record is gone from the database (crypto-shredding).
  const Db material = store->env().OpenDb("material", false).value();
  auto txn = store->env().BeginRead().value();
  CHECK(txn.Get(material, VersionKey(k.key_id, 1)).status().code() == Code::kNotFound);
  CHECK(txn.Get(material, VersionKey(k.key_id, 2)).ok());
}

TEST_CASE("key updates, scheduled deletion and destruction", "[store][keys]") {
  TempDir tmp;
  FakeClock clock;
  auto store = OpenStore(tmp.path(), TestRootKey(1), &clock);
  const KeyRecord k = store->CreateKey("k", {}, "").value();
  REQUIRE(store->CreateAlias("alias/doomed", k.key_id).ok());
  const KeyRecord other = store->CreateKey("other", {}, "").value();
  REQUIRE(store->CreateAlias("alias/kept", other.key_id).ok());

  auto disabled = store->UpdateKey(k.key_id, [](KeyRecord& r) {
    r.key_state = KeyState::kDisabled;
    r.description = "off";
    return Status::Ok();
  });
  REQUIRE(disabled.ok());
  CHECK(store->GetKey(k.key_id).value().key_state == KeyState::kDisabled);
  CHECK(store->GetKey(k.key_id).value().description == "off");

  // Identity and invariants are not the caller's to change.
  auto bad = [&](std::function<void(KeyRecord&)> f) {
    return store
        ->UpdateKey(k.key_id,
                    [&](KeyRecord& r) {
                      f(r);
                      return Status::Ok();
                    })
        .status()
        .code();
  };
  CHECK(bad([](KeyRecord& r) { r.key_id = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"; }) ==
        Code::kInvalidArgument);
  CHECK(bad([](KeyRecord& r) { r.primary_version = 5; }) == Code::kInvalidArgument);
  CHECK(bad([](KeyRecord& r) { r.creation_date = 1; }) == Code::kInvalidArgument);
  CHECK(bad([](KeyRecord& r) { r.key_state = KeyState::kPendingDeletion; }) ==
        Code::kInvalidArgument);  // no DeletionDate
  CHECK(bad([](KeyRecord& r) {
          r.key_state = KeyState::kDestroyed;
          r.deletion_date = 1;
        }) == Code::kInvalidArgument);
  // A failing mutator aborts the transaction.
  CHECK(store
            ->UpdateKey(k.key_id,
                        [](KeyRecord& r) {
                          r.description = "should not stick";
                          return Status(Error(Code::kPermissionDenied, "no"));
                        })
            .status()
            .code() == Code::kPermissionDenied);
  CHECK(store->GetKey(k.key_id).value().description == "off");

  REQUIRE(store
              ->UpdateKey(k.key_id,
                          [&](KeyRecord& r) {
                            r.key_state = KeyState::kPendingDeletion;
                            r.deletion_date = clock.now + 7 * kDay;
                            return Status::Ok();
                          })
              .ok());
  CHECK(store->AddVersion(k.key_id, RotationType::kOnDemand).status().code() ==
        Code::kFailedPrecondition);
  CHECK(store->CreateAlias("alias/late", k.key_id).status().code() == Code::kFailedPrecondition);
  CHECK(store->KeysDueForDeletion(clock.now).value().empty());
  CHECK(store->DestroyKey(k.key_id).code() == Code::kFailedPrecondition);      // not yet due
  CHECK(store->DestroyKey(other.key_id).code() == Code::kFailedPrecondition);  // not pending

  clock.now += 7 * kDay;
  CHECK(store->KeysDueForDeletion(clock.now).value() == std::vector<std::string>{k.key_id});
  REQUIRE(store->DestroyKey(k.key_id).ok());
  REQUIRE(store->DestroyKey(k.key_id).ok());  // idempotent

  const KeyRecord gone = store->GetKey(k.key_id).value();
  CHECK(gone.key_state == KeyState::kDestroyed);
  CHECK(store->GetKeyMaterial(k.key_id).status().code() == Code::kKeyUnavailable);
  CHECK(store->GetKey("alias/doomed").status().code() == Code::kNotFound);
  CHECK(store->GetKey("alias/kept").value().key_id == other.key_id);
  const std::vector<KeyVersion> versions = store->ListVersions(k.key_id).value();
  for (const KeyVersion& v : versions) {
    CHECK(v.state == VersionState::kDestroyed);
  }
  CHECK(store->UpdateKey(k.key_id, [](KeyRecord&) { return Status::Ok(); }).status().code() ==
        Code::kFailedPrecondition);
  CHECK(store->KeysDueForDeletion(clock.now).value().empty());
}

TEST_CASE("a TxnHook commits with the change or aborts it", "[store][hook]") {
  TempDir tmp;
  auto store = OpenStore(tmp.path(), TestRootKey(1));
  const Db audit = store->env().OpenDb("audit", true).value();

  auto k = store->CreateKey("hooked", {}, "", [&](WriteTxn& txn) {
    return txn.Put(audit, "rec1", std::string_view("CreateKey"));
  });
  REQUIRE(k.ok());
  CHECK(store->env().BeginRead().value().Get(audit, "rec1").value() == "CreateKey");

  auto failed = store->AddVersion(k->key_id, RotationType::kOnDemand, {}, [](WriteTxn&) {
    return Status(Error(Code::kIo, "audit disk full", 28));
  });
  CHECK(failed.status().code() == Code::kIo);
  CHECK(store->GetKey(k->key_id).value().primary_version == 1);  // fail closed: no rotation
  CHECK(store->ListVersions(k->key_id).value().size() == 1);
}

TEST_CASE("reopening keeps everything", "[store][persistence]") {
  TempDir tmp;
  std::map<std::string, std::string> material;
  std::vector<KeyRecord> keys;
  {
    auto store = OpenStore(tmp.path(), TestRootKey(1));
    for (int i = 0; i < 3; ++i)
      keys.push_back(store->CreateKey("k" + std::to_string(i), {}, "p").value());
    REQUIRE(store->AddVersion(keys[0].key_id, RotationType::kOnDemand).ok());
    REQUIRE(store->CreateAlias("alias/zero", keys[0].key_id).ok());
    keys[0] = store->GetKey(keys[0].key_id).value();
    material = AllMaterial(*store);
    CHECK(material.size() == 4);
  }
  auto store = OpenStore(tmp.path(), TestRootKey(1));
  for (const KeyRecord& k : keys) CHECK(store->GetKey(k.key_id).value() == k);
  CHECK(store->GetKey("alias/zero").value().key_id == keys[0].key_id);
  CHECK(AllMaterial(*store) == material);
  CHECK(ModeOf(tmp.path() + "/data.mdb") == 0600);
}

TEST_CASE("a wrong root key is refused and nothing is written", "[store][rootkey]") {
  TempDir tmp;
  {
    auto store = OpenStore(tmp.path(), TestRootKey(1));
    REQUIRE(store->CreateKey("k", {}, "").ok());
  }
  const std::string data = tmp.path() + "/data.mdb";
  const std::string before = Sha256Hex(data);
  struct stat st_before {};
  REQUIRE(::stat(data.c_str(), &st_before) == 0);

  auto wrong = KeyStore::Open(tmp.path(), TestRootKey(2));
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error().code() == Code::kPermissionDenied);
  CHECK(wrong.error().message() ==
        "wrong root key: the state in " + tmp.path() + " was sealed with another root key");

  // lock.mdb is LMDB's volatile reader table; data.mdb is the state.
  CHECK(Sha256Hex(data) == before);
  struct stat st_after {};
  REQUIRE(::stat(data.c_str(), &st_after) == 0);
  CHECK(st_after.st_size == st_before.st_size);
  CHECK(st_after.st_mtim.tv_sec == st_before.st_mtim.tv_sec);
  CHECK(st_after.st_mtim.tv_nsec == st_before.st_mtim.tv_nsec);
  CHECK(KeyStore::Open(tmp.path(), TestRootKey(1)).ok());
}

TEST_CASE("ChangeRootKey re-seals everything under the new key", "[store][rootkey]") {
  TempDir tmp;
  std::map<std::string, std::string> material;
  {
    auto store = OpenStore(tmp.path(), TestRootKey(1));
    const KeyRecord k = store->CreateKey("k", {}, "").value();
    REQUIRE(store->AddVersion(k.key_id, RotationType::kOnDemand).ok());
    REQUIRE(store->CreateKey("k2", {}, "").ok());
    material = AllMaterial(*store);
    REQUIRE(store->ChangeRootKey(TestRootKey(3), std::nullopt).ok());
    CHECK(AllMaterial(*store) == material);  // the live store switched keys too
  }
  CHECK(KeyStore::Open(tmp.path(), TestRootKey(1)).status().code() == Code::kPermissionDenied);
  auto store = OpenStore(tmp.path(), TestRootKey(3));
  CHECK(AllMaterial(*store) == material);

  SECTION("a tampered record makes the whole change fail, changing nothing") {
    const std::string victim = material.begin()->first;
    const Db db = store->env().OpenDb("material", false).value();
    {
      auto txn = store->env().BeginWrite().value();
      std::string sealed = txn.Get(db, victim).value();
      sealed[20] ^= 1;
      REQUIRE(txn.Put(db, victim, sealed).ok());
      REQUIRE(txn.Commit().ok());
    }
    CHECK(store->ChangeRootKey(TestRootKey(4), std::nullopt).code() == Code::kCorrupt);
    store.reset();
    CHECK(KeyStore::Open(tmp.path(), TestRootKey(4)).status().code() == Code::kPermissionDenied);
    CHECK(KeyStore::Open(tmp.path(), TestRootKey(3)).ok());
  }
}

TEST_CASE("tampered sealed material does not unseal", "[store][tamper]") {
  TempDir tmp;
  auto store = OpenStore(tmp.path(), TestRootKey(1));
  const KeyRecord k = store->CreateKey("k", {}, "").value();
  REQUIRE(store->AddVersion(k.key_id, RotationType::kOnDemand).ok());
  const Db db = store->env().OpenDb("material", false).value();
  auto rewrite = [&](const std::string& key, const std::string& value) {
    auto txn = store->env().BeginWrite().value();
    REQUIRE(txn.Put(db, key, value).ok());
    REQUIRE(txn.Commit().ok());
  };
  const std::string v1 = VersionKey(k.key_id, 1);
  const std::string v2 = VersionKey(k.key_id, 2);
  const std::string sealed1 = store->env().BeginRead().value().Get(db, v1).value();
  const std::string sealed2 = store->env().BeginRead().value().Get(db, v2).value();
  CHECK(sealed1.size() == 60);

  SECTION("one flipped bit anywhere: nonce, ciphertext or tag") {
    for (size_t at :
         {size_t{0}, size_t{11}, size_t{12}, size_t{30}, size_t{43}, size_t{44}, size_t{59}}) {
      std::string bad = sealed1;
      bad[at] ^= 0x01;
      rewrite(v1, bad);
      auto r = store->GetVersionMaterial(k.key_id, 1);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == Code::kCorrupt);
    }
  }
  SECTION("a sealed blob moved to another version") {
    rewrite(v1, sealed2);
    CHECK(store->GetVersionMaterial(k.key_id, 1).status().code() == Code::kCorrupt);
  }
  SECTION("truncated") {
    rewrite(v1, sealed1.substr(0, 59));
    CHECK(store->GetVersionMaterial(k.key_id, 1).status().code() == Code::kCorrupt);
  }
  CHECK(store->GetVersionMaterial(k.key_id, 2).ok());  // the others are unaffected
}

TEST_CASE("Backup makes a compact copy that opens elsewhere", "[store][backup]") {
  TempDir tmp;
  const std::string backup = tmp.Sub("backup.mdb");
  auto store = OpenStore(tmp.Sub("state"), TestRootKey(1));
  const KeyRecord k = store->CreateKey("k", {}, "").value();
  REQUIRE(store->AddVersion(k.key_id, RotationType::kOnDemand).ok());
  REQUIRE(store->CreateAlias("alias/b", k.key_id).ok());
  const auto material = AllMaterial(*store);

  REQUIRE(store->Backup(backup).ok());
  CHECK(ModeOf(backup) == 0600);
  auto again = store->Backup(backup);
  CHECK(again.code() == Code::kAlreadyExists);
  // Changes after the backup are not in it.
  REQUIRE(store->CreateKey("later", {}, "").ok());

  // Restore: a fresh 0700 dir holding the file as data.mdb.
  const std::string restored = tmp.Sub("restored");
  REQUIRE(::mkdir(restored.c_str(), 0700) == 0);
  testing::WriteFileBytes(restored + "/data.mdb", testing::ReadFileBytes(backup), 0600);
  CHECK(KeyStore::Open(restored, TestRootKey(9)).status().code() == Code::kPermissionDenied);
  auto copy = OpenStore(restored, TestRootKey(1));
  CHECK(copy->GetKey(k.key_id).value() == store->GetKey(k.key_id).value());
  CHECK(copy->GetKey("alias/b").value().key_id == k.key_id);
  CHECK(AllMaterial(*copy) == material);
  CHECK(copy->ListKeys(100, "").value().items.size() == 1);
}

TEST_CASE("the store initializes a fresh dir and refuses a newer format", "[store][format]") {
  TempDir tmp;
  const std::string dir = tmp.Sub("new");
  {
    auto env = Env::Open(dir).value();
    CHECK_FALSE(KeyStore::Probe(*env).value().initialized);
  }
  { auto store = OpenStore(dir, TestRootKey(1)); }
  {
    auto env = Env::Open(dir).value();
    auto info = KeyStore::Probe(*env).value();
    CHECK(info.initialized);
    CHECK_FALSE(info.kdf.has_value());
    const Db meta = env->OpenDb("meta", false).value();
    auto txn = env->BeginWrite().value();
    REQUIRE(txn.Put(meta, "format",
                    std::string_view(R"({"v":1,"StateFormatVersion":99,"CreationDate":1})"))
                .ok());
    REQUIRE(txn.Commit().ok());
  }
  auto store = KeyStore::Open(dir, TestRootKey(1));
  CHECK(store.status().code() == Code::kFailedPrecondition);
}

TEST_CASE("concurrent readers while a writer rotates", "[store][threads]") {
  TempDir tmp;
  auto store = OpenStore(tmp.path(), TestRootKey(1));
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(store->CreateKey("k", {}, "").value().key_id);
  const auto first_material = AllMaterial(*store);

  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::atomic<int> reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      size_t i = static_cast<size_t>(t);
      while (!stop) {
        const std::string& id = ids[i++ % ids.size()];
        auto km = store->GetKeyMaterial(id);
        // Version 1's material never changes, whatever the writer does meanwhile.
        auto v1 = store->GetVersionMaterial(id, 1);
        if (!km.ok() || !v1.ok() || km->version < 1 ||
            HexEncode(v1->span()) != first_material.at(VersionKey(id, 1)) ||
            !store->ListKeys(2, "").ok()) {
          ++errors;
        }
        ++reads;
      }
    });
  }
  for (int round = 0; round < 5; ++round) {
    for (const std::string& id : ids) REQUIRE(store->AddVersion(id, RotationType::kOnDemand).ok());
  }
  REQUIRE(store->ChangeRootKey(TestRootKey(2), std::nullopt).ok());  // under readers, too
  for (const std::string& id : ids) REQUIRE(store->AddVersion(id, RotationType::kOnDemand).ok());
  stop = true;
  for (auto& t : readers) t.join();
  CHECK(errors == 0);
  CHECK(reads > 0);
  for (const std::string& id : ids) CHECK(store->GetKey(id).value().primary_version == 7);
}

}  // namespace
}  // namespace kmsfs::keyd

namespace kmsfs::keyd {
namespace {

TEST_CASE("KeyStore refuses a world-writable state dir", "[store][format]") {
  testing::TempDir tmp;
  const std::string dir = tmp.Sub("state");
  { REQUIRE(KeyStore::Open(dir, testing::TestRootKey(1)).ok()); }
  REQUIRE(::chmod(dir.c_str(), 0777) == 0);
  auto store = KeyStore::Open(dir, testing::TestRootKey(1));
  REQUIRE_FALSE(store.ok());
  CHECK(store.error().code() == Code::kPermissionDenied);
  CHECK(store.error().message().find("chmod 700") != std::string::npos);
}

}  // namespace
}  // namespace kmsfs::keyd
