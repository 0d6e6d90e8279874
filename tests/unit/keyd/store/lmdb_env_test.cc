#include "keyd/store/lmdb_env.h"

#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

#include "tests/catch.h"
#include "tests/unit/keyd/store/store_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::ModeOf;
using testing::TempDir;

TEST_CASE("Env creates a missing state dir 0700 and its files 0600", "[store][lmdb]") {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  const mode_t old_umask = ::umask(0);  // even with a permissive umask
  auto env = Env::Open(dir);
  ::umask(old_umask);
  REQUIRE(env.ok());
  CHECK(ModeOf(dir) == 0700);
  CHECK(ModeOf(dir + "/data.mdb") == 0600);
  CHECK(ModeOf(dir + "/lock.mdb") == 0600);
}

TEST_CASE("Env refuses unsafe state dirs and files", "[store][lmdb]") {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  REQUIRE(::mkdir(dir.c_str(), 0700) == 0);

  SECTION("world-writable dir") {
    REQUIRE(::chmod(dir.c_str(), 0777) == 0);
    auto env = Env::Open(dir);
    REQUIRE_FALSE(env.ok());
    CHECK(env.error().code() == Code::kPermissionDenied);
    CHECK(env.error().message().find("0777") != std::string::npos);
    CHECK(env.error().message().find("chmod 700 " + dir) != std::string::npos);
  }
  SECTION("group-writable dir") {
    REQUIRE(::chmod(dir.c_str(), 0770) == 0);
    CHECK(Env::Open(dir).status().code() == Code::kPermissionDenied);
  }
  SECTION("not a directory") {
    testing::WriteFileBytes(tmp.Sub("file"), "x", 0600);
    CHECK_FALSE(Env::Open(tmp.Sub("file")).ok());
  }
  SECTION("data.mdb readable by others") {
    { REQUIRE(Env::Open(dir).ok()); }
    REQUIRE(::chmod((dir + "/data.mdb").c_str(), 0644) == 0);
    auto env = Env::Open(dir);
    REQUIRE_FALSE(env.ok());
    CHECK(env.error().code() == Code::kPermissionDenied);
    CHECK(env.error().message().find("chmod 600") != std::string::npos);
  }
  SECTION("data.mdb is a symlink") {
    testing::WriteFileBytes(tmp.Sub("elsewhere"), "", 0600);
    REQUIRE(::symlink(tmp.Sub("elsewhere").c_str(), (dir + "/data.mdb").c_str()) == 0);
    CHECK(Env::Open(dir).status().code() == Code::kPermissionDenied);
  }
}

TEST_CASE("an environment opens once per process", "[store][lmdb]") {
  TempDir tmp;
  auto first = Env::Open(tmp.path());
  REQUIRE(first.ok());
  CHECK(Env::Open(tmp.path()).status().code() == Code::kFailedPrecondition);
  first->reset();
  CHECK(Env::Open(tmp.path()).ok());
}

TEST_CASE("WriteTxn commits or aborts as a whole", "[store][lmdb]") {
  TempDir tmp;
  auto env = Env::Open(tmp.path()).value();
  const Db db = env->OpenDb("t", true).value();

  {
    auto txn = env->BeginWrite().value();
    REQUIRE(txn.Put(db, "a", std::string_view("1")).ok());
    // Its own writes are visible inside it.
    CHECK(txn.Get(db, "a").value() == "1");
  }  // destroyed without Commit: aborted
  CHECK(env->BeginRead().value().Get(db, "a").status().code() == Code::kNotFound);

  {
    auto txn = env->BeginWrite().value();
    REQUIRE(txn.Put(db, "a", std::string_view("1")).ok());
    REQUIRE(txn.Put(db, "b", std::string_view("2")).ok());
    CHECK(txn.Put(db, "a", std::string_view("x"), PutMode::kNoOverwrite).code() ==
          Code::kAlreadyExists);
    CHECK(txn.Delete(db, "zz").code() == Code::kNotFound);  // an answer, not a poison
    REQUIRE(txn.Commit().ok());
    CHECK_FALSE(txn.active());
    CHECK(txn.Commit().code() == Code::kInternal);  // over is over
  }
  auto r = env->BeginRead().value();
  CHECK(r.Get(db, "a").value() == "1");
  CHECK(r.Get(db, "b").value() == "2");
}

TEST_CASE("a read snapshot does not see later commits", "[store][lmdb]") {
  TempDir tmp;
  auto env = Env::Open(tmp.path()).value();
  const Db db = env->OpenDb("t", true).value();
  auto before = env->BeginRead().value();
  {
    auto txn = env->BeginWrite().value();
    REQUIRE(txn.Put(db, "k", std::string_view("v")).ok());
    REQUIRE(txn.Commit().ok());
  }
  CHECK(before.Get(db, "k").status().code() == Code::kNotFound);
  // MDB_NOTLS: one thread may hold several read transactions.
  auto after = env->BeginRead().value();
  CHECK(after.Get(db, "k").value() == "v");
}

TEST_CASE("Scan honours prefix and start_after", "[store][lmdb]") {
  TempDir tmp;
  auto env = Env::Open(tmp.path()).value();
  const Db db = env->OpenDb("t", true).value();
  {
    auto txn = env->BeginWrite().value();
    for (const char* k : {"a/1", "a/2", "a/3", "b/1", "a", "c"}) {
      REQUIRE(txn.Put(db, k, std::string_view(k)).ok());
    }
    REQUIRE(txn.Commit().ok());
  }
  auto txn = env->BeginRead().value();
  auto collect = [&](std::string_view prefix, std::string_view after, size_t max = 100) {
    std::vector<std::string> out;
    REQUIRE(txn.Scan(db, prefix, after,
                     [&](std::string_view k, std::string_view v) {
                       CHECK(k == v);
                       out.emplace_back(k);
                       return out.size() < max;
                     })
                .ok());
    return out;
  };
  CHECK(collect("a/", "") == std::vector<std::string>{"a/1", "a/2", "a/3"});
  CHECK(collect("a/", "a/1") == std::vector<std::string>{"a/2", "a/3"});
  CHECK(collect("", "a/3") == std::vector<std::string>{"b/1", "c"});
  CHECK(collect("", "", 2) == std::vector<std::string>{"a", "a/1"});
  CHECK(collect("zz", "").empty());
}

TEST_CASE("a full map is ENOSPC, and the txn reports it at commit", "[store][lmdb]") {
  TempDir tmp;
  Env::Options small;
  small.map_size = 64 * 1024;
  auto env = Env::Open(tmp.path(), small).value();
  const Db db = env->OpenDb("t", true).value();
  auto txn = env->BeginWrite().value();
  const std::string value(1000, 'v');
  Status failed;
  for (int i = 0; i < 1000 && failed.ok(); ++i) {
    failed = txn.Put(db, "key" + std::to_string(i), value);
  }
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.code() == Code::kIo);
  CHECK(failed.error().sys_errno() == ENOSPC);
  Status commit = txn.Commit();
  CHECK(commit.code() == Code::kIo);
  CHECK(commit.error().sys_errno() == ENOSPC);
}

TEST_CASE("readers run concurrently with a writer", "[store][lmdb]") {
  TempDir tmp;
  auto env = Env::Open(tmp.path()).value();
  const Db db = env->OpenDb("t", true).value();
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop) {
        auto txn = env->BeginRead();
        if (!txn.ok()) {
          ++errors;
          continue;
        }
        // Each snapshot sees a prefix 0..n-1 of the keys, never a gap (writes are atomic).
        size_t n = 0;
        bool gap = false;
        Status s = txn->Scan(db, "", "", [&](std::string_view, std::string_view) {
          ++n;
          return true;
        });
        for (size_t i = 0; i < n && s.ok(); ++i) {
          char key[32];
          std::snprintf(key, sizeof key, "k%06zu", i);
          if (!txn->Get(db, key).ok()) gap = true;
        }
        if (!s.ok() || gap) ++errors;
      }
    });
  }
  for (int i = 0; i < 200; ++i) {
    auto txn = env->BeginWrite().value();
    char key[32];
    std::snprintf(key, sizeof key, "k%06d", i);
    REQUIRE(txn.Put(db, key, std::string_view("v")).ok());
    REQUIRE(txn.Commit().ok());
  }
  stop = true;
  for (auto& t : readers) t.join();
  CHECK(errors == 0);
}

}  // namespace
}  // namespace kmsfs::keyd
