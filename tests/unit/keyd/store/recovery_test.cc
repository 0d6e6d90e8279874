// Recovery codes and the root-key escrow (keyd/store/recovery.h), the store's escrow, root key
// change and version-retirement calls, the state lock and InstallBackup (maintenance.h).
#include "keyd/store/recovery.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "keyd/store/key_store.h"
#include "keyd/store/maintenance.h"
#include "tests/unit/keyd/store/store_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::TempDir;
using testing::TestRootKey;

std::string Text(const crypto::SecretBytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

TEST_CASE("recovery codes: format, parse, checksum", "[store][recovery]") {
  const RecoveryCode code = NewRecoveryCode();
  const std::string text = Text(FormatRecoveryCode(code));
  REQUIRE(text.size() == 65);
  for (size_t i = 0; i < text.size(); ++i) {
    INFO(i);
    if (i % 6 == 5) {
      CHECK(text[i] == '-');
    } else {
      CHECK(std::string("0123456789ABCDEFGHJKMNPQRSTVWXYZ").find(text[i]) != std::string::npos);
    }
  }
  auto back = ParseRecoveryCode(text);
  REQUIRE(back.ok());
  CHECK(*back == code);

  SECTION("case, spaces, dashes and look-alike letters are forgiven") {
    std::string loose;
    for (char c : text) {
      if (c == '-') {
        loose += "  ";
      } else if (c == '0') {
        loose += 'o';
      } else if (c == '1') {
        loose += 'l';
      } else {
        loose += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
    }
    auto p = ParseRecoveryCode(loose);
    REQUIRE(p.ok());
    CHECK(*p == code);
  }
  SECTION("every single-character change is caught, never a different code") {
    int caught = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '-') continue;
      std::string bad = text;
      bad[i] = bad[i] == 'Z' ? 'Y' : 'Z';
      auto p = ParseRecoveryCode(bad);
      if (!p.ok()) {
        ++caught;
        CHECK(p.error().code() == Code::kInvalidArgument);
        CHECK(p.error().message().find(text.substr(0, 5)) == std::string::npos);
      } else {
        CHECK_FALSE(*p == code);  // 2^-16 chance per change; must then differ anyway
      }
    }
    CHECK(caught >= 54);
  }
  SECTION("wrong length and alphabet") {
    CHECK_FALSE(ParseRecoveryCode(text.substr(0, 64)).ok());
    CHECK_FALSE(ParseRecoveryCode(text + "A").ok());
    CHECK_FALSE(ParseRecoveryCode("").ok());
    std::string u = text;
    u[0] = 'U';
    CHECK(ParseRecoveryCode(u).error().message().find("alphabet") != std::string::npos);
  }
}

TEST_CASE("root key escrow opens only with its code", "[store][recovery]") {
  const RecoveryCode code = NewRecoveryCode();
  const crypto::RootKey root = TestRootKey(3);
  auto escrow = SealRootKeyEscrow(code, root);
  REQUIRE(escrow.ok());
  CHECK(escrow->size() == kRecoveryEscrowSize);
  auto opened = OpenRootKeyEscrow(code, *escrow);
  REQUIRE(opened.ok());
  CHECK(*opened == root);
  CHECK(OpenRootKeyEscrow(NewRecoveryCode(), *escrow).error().code() == Code::kPermissionDenied);
  Bytes flipped = *escrow;
  flipped[20] ^= 1;
  CHECK(OpenRootKeyEscrow(code, flipped).error().code() == Code::kPermissionDenied);
  CHECK(OpenRootKeyEscrow(code, ByteSpan(*escrow).first(10)).error().code() == Code::kCorrupt);
}

TEST_CASE("store: recovery escrow, root key change, backup and InstallBackup",
          "[store][recovery]") {
  TempDir dir;
  const std::string state = dir.Sub("state");
  const RecoveryCode code = NewRecoveryCode();
  std::string key_id;
  {
    auto lock = LockStateDir(state);
    REQUIRE(lock.ok());
    CHECK(LockStateDir(state).error().code() == Code::kFailedPrecondition);  // held
    auto store = KeyStore::Open(state, TestRootKey(1));
    REQUIRE(store.ok());
    auto k = (*store)->CreateKey("d", {}, "");
    REQUIRE(k.ok());
    key_id = k->key_id;
    REQUIRE((*store)->SetRecoveryCode(code).ok());
    CHECK(KeyStore::Probe((*store)->env())->recovery_escrow);
    REQUIRE((*store)->Backup(dir.Sub("with-escrow.mdb")).ok());
    // A root key change drops the escrow (it held the old key).
    REQUIRE((*store)->ChangeRootKey(TestRootKey(2), std::nullopt).ok());
    CHECK_FALSE(KeyStore::Probe((*store)->env())->recovery_escrow);
    CHECK(KeyStore::RecoverRootKey((*store)->env(), code).error().code() == Code::kNotFound);
    REQUIRE((*store)->Backup(dir.Sub("no-escrow.mdb")).ok());
  }
  CHECK(LockStateDir(state).ok());  // released with its fd
  // The old root key no longer opens the state; the new one does and the material unseals.
  CHECK(KeyStore::Open(state, TestRootKey(1)).error().code() == Code::kPermissionDenied);
  {
    auto store = KeyStore::Open(state, TestRootKey(2));
    REQUIRE(store.ok());
    CHECK((*store)->GetVersionMaterial(key_id, 1).ok());
  }

  // InstallBackup with the recovery code: the backup's root key (1) comes out of the escrow.
  const std::string restored = dir.Sub("restored");
  REQUIRE(LockStateDir(restored).ok());
  Status s = InstallBackup(
      dir.Sub("with-escrow.mdb"), restored,
      [&](std::unique_ptr<Env> env) -> Result<std::unique_ptr<KeyStore>> {
        KMSFS_ASSIGN_OR_RETURN(crypto::RootKey r, KeyStore::RecoverRootKey(*env, code));
        CHECK(r == TestRootKey(1));
        KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<KeyStore> st, KeyStore::Open(std::move(env), r, {}));
        KMSFS_RETURN_IF_ERROR(st->ChangeRootKey(TestRootKey(9), std::nullopt));
        return st;
      });
  REQUIRE(s.ok());
  {
    auto store = KeyStore::Open(restored, TestRootKey(9));
    REQUIRE(store.ok());
    CHECK((*store)->GetVersionMaterial(key_id, 1).ok());
  }
  // Never over an existing state; a failing open installs nothing.
  auto open_with_1 = [](std::unique_ptr<Env> env) -> Result<std::unique_ptr<KeyStore>> {
    return KeyStore::Open(std::move(env), TestRootKey(1), {});
  };
  CHECK(InstallBackup(dir.Sub("with-escrow.mdb"), restored, open_with_1).code() ==
        Code::kAlreadyExists);
  const std::string other = dir.Sub("other");
  REQUIRE(LockStateDir(other).ok());
  CHECK(InstallBackup(dir.Sub("no-escrow.mdb"), other, open_with_1).code() ==
        Code::kPermissionDenied);  // sealed under 2
  CHECK_FALSE(std::filesystem::exists(other + "/data.mdb"));
  CHECK_FALSE(std::filesystem::exists(other + "/restore.tmp"));
}

// Every value of the store's "material" database (the sealed key versions), copied out.
std::vector<std::string> SealedMaterial(Env& env) {
  std::vector<std::string> out;
  auto db = env.OpenDb("material", /*create=*/false);
  REQUIRE(db.ok());
  auto txn = env.BeginRead();
  REQUIRE(txn.ok());
  REQUIRE(txn->Scan(*db, "", "", [&](std::string_view, std::string_view v) {
                out.emplace_back(v);
                return true;
              }).ok());
  return out;
}

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST_CASE("CompactStateDir: after a root key change data.mdb holds no old sealed material",
          "[store][recovery]") {
  TempDir dir;
  const std::string state = dir.Sub("state");
  auto lock = LockStateDir(state);
  REQUIRE(lock.ok());
  std::vector<std::string> old_sealed;
  std::string key_id;
  {
    auto store = KeyStore::Open(state, TestRootKey(1));
    REQUIRE(store.ok());
    for (int i = 0; i < 3; ++i) {
      auto k = (*store)->CreateKey("d", {}, "");
      REQUIRE(k.ok());
      key_id = k->key_id;
      REQUIRE((*store)->AddVersion(k->key_id, RotationType::kOnDemand).ok());
    }
    old_sealed = SealedMaterial((*store)->env());
    REQUIRE(old_sealed.size() == 6);
    REQUIRE((*store)->ChangeRootKey(TestRootKey(2), std::nullopt).ok());
    for (const std::string& now : SealedMaterial((*store)->env())) {
      for (const std::string& old : old_sealed) REQUIRE(now != old);  // re-sealed
    }
  }
  auto count_old = [&] {
    const std::string bytes = FileBytes(state + "/data.mdb");
    REQUIRE(!bytes.empty());
    size_t found = 0;
    for (const std::string& old : old_sealed) found += bytes.find(old) != std::string::npos;
    return found;
  };
  // What the review found: the freed pages still hold the old sealing.
  const size_t before = count_old();
  INFO("old sealed blobs in data.mdb before compaction: " << before);
  REQUIRE(CompactStateDir(state).ok());
  CHECK(count_old() == 0);
  CHECK_FALSE(std::filesystem::exists(state + "/compact.tmp"));
  CHECK((std::filesystem::status(state + "/data.mdb").permissions() &
         std::filesystem::perms::others_all) == std::filesystem::perms::none);
  // The compacted state opens under the new key and unseals.
  CHECK(KeyStore::Open(state, TestRootKey(1)).error().code() == Code::kPermissionDenied);
  auto store = KeyStore::Open(state, TestRootKey(2));
  REQUIRE(store.ok());
  CHECK((*store)->GetVersionMaterial(key_id, 1).ok());
  CHECK((*store)->GetVersionMaterial(key_id, 2).ok());
}

TEST_CASE("store: version retirement with a destruction date", "[store][lifecycle]") {
  TempDir dir;
  testing::FakeClock clock;
  KeyStore::Options o;
  o.clock = clock.Fn();
  auto store = KeyStore::Open(dir.Sub("s"), TestRootKey(1), std::move(o));
  REQUIRE(store.ok());
  auto k = (*store)->CreateKey("d", {}, "");
  REQUIRE(k.ok());
  REQUIRE((*store)->AddVersion(k->key_id, RotationType::kOnDemand).ok());
  auto v = (*store)->ScheduleVersionDestruction(k->key_id, 1, clock.now + 100);
  REQUIRE(v.ok());
  CHECK(v->state == VersionState::kRetired);
  CHECK((*store)->GetVersionMaterial(k->key_id, 1).error().code() == Code::kKeyUnavailable);
  CHECK((*store)->ScheduleVersionDestruction(k->key_id, 2, clock.now).error().code() ==
        Code::kFailedPrecondition);  // primary
  CHECK((*store)->VersionsDueForDestruction(clock.now + 99)->empty());
  CHECK((*store)->DestroyVersion(k->key_id, 1).code() == Code::kFailedPrecondition);  // not yet
  clock.now += 100;
  // Due, the scheduler has not run yet: too late to cancel all the same.
  auto late = (*store)->CancelVersionRetirement(k->key_id, 1);
  REQUIRE_FALSE(late.ok());
  CHECK(late.error().code() == Code::kFailedPrecondition);
  CHECK((*store)->GetVersionMaterial(k->key_id, 1).error().code() == Code::kKeyUnavailable);
  REQUIRE((*store)->VersionsDueForDestruction(clock.now)->size() == 1);
  REQUIRE((*store)->DestroyVersion(k->key_id, 1).ok());
  CHECK((*store)->VersionsDueForDestruction(clock.now)->empty());
  CHECK((*store)->CancelVersionRetirement(k->key_id, 1).error().code() ==
        Code::kFailedPrecondition);
}

}  // namespace
}  // namespace kmsfs::keyd
