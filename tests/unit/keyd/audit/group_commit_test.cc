// Group commit: many concurrent appends share few durable commits, and the chain stays whole.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "keyd/audit/audit_trail.h"
#include "tests/catch.h"
#include "tests/unit/keyd/audit/audit_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::AllRecords;
using testing::AuditTempDir;
using testing::QuietOptions;
using testing::SampleRecord;

TEST_CASE("8 threads x 500 appends: all durable, dense, chained, in far fewer commits",
          "[audit][group]") {
  AuditTempDir dir("/var/tmp");  // a real disk: fsync costs what it costs in production
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE(trail.ok());

  constexpr int kThreads = 8, kPerThread = 500;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        AuditRecord r = SampleRecord(i);
        r.detail = std::to_string(t) + "/" + std::to_string(i);
        if (!(*trail)->Append(std::move(r)).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  REQUIRE(failures == 0);

  const AuditTrail::Stats stats = (*trail)->GetStats();
  WARN("group commit: " << stats.appended << " appends in " << stats.commits
                        << " commits (largest batch " << stats.max_batch << ")");
  CHECK(stats.appended == kThreads * kPerThread);
  CHECK(stats.failed_commits == 0);
  CHECK(stats.commits * 3 <= stats.appended);  // each commit carried 3+ records on average
  CHECK(stats.max_batch > 1);

  // Reopen: what Append acknowledged is on disk.
  trail->reset();
  env->reset();
  env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE(trail.ok());
  const auto all = AllRecords(**trail);
  REQUIRE(all.size() == kThreads * kPerThread);
  std::map<int, int> next_of_thread;
  for (size_t i = 0; i < all.size(); ++i) {
    REQUIRE(all[i].record.sequence == i + 1);
    const std::string& d = all[i].record.detail;
    const int t = std::stoi(d.substr(0, d.find('/')));
    const int n = std::stoi(d.substr(d.find('/') + 1));
    CHECK(n == next_of_thread[t]++);  // each thread's records in its own order
  }
  auto v = (*trail)->VerifyChain();
  REQUIRE(v.ok());
  CHECK(v->ok);
  CHECK(v->message == "verified 1..4000");
}

TEST_CASE("AppendAsync beside Append: every continuation runs once, after its record is durable",
          "[audit][group]") {
  AuditTempDir dir;
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE(trail.ok());

  // Each continuation reads the trail's durable head (reading is allowed in a continuation;
  // appending to the same trail is not).
  constexpr int kAsyncThreads = 4, kSyncThreads = 2, kPer = 150;
  constexpr int kAsync = kAsyncThreads * kPer;
  std::atomic<int> continued{0}, failures{0}, early{0};
  std::mutex done_mu;
  std::condition_variable done_cv;
  std::vector<std::thread> threads;
  for (int t = 0; t < kAsyncThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPer; ++i) {
        (*trail)->AppendAsync(SampleRecord(i), [&](Status s) {
          if (!s.ok()) ++failures;
          // Durable means in the WAL or LMDB (Head() reads both): the durable head must count at
          // least every async record continued so far, this one included.
          auto head = (*trail)->Head();
          const int before = continued.load();
          if (!head.ok() || head->sequence < static_cast<uint64_t>(before + 1)) ++early;
          if (++continued == kAsync) {
            std::lock_guard lock(done_mu);
            done_cv.notify_all();
          }
        });
      }
    });
  }
  for (int t = 0; t < kSyncThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPer; ++i) {
        if (!(*trail)->Append(SampleRecord(i)).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  {
    std::unique_lock lock(done_mu);
    REQUIRE(done_cv.wait_for(lock, std::chrono::seconds(60), [&] { return continued == kAsync; }));
  }
  CHECK(failures == 0);
  CHECK(early == 0);
  CHECK((*trail)->GetStats().queued == 0);
  CHECK((*trail)->GetStats().appended == kAsync + kSyncThreads * kPer);
  auto v = (*trail)->VerifyChain();
  REQUIRE(v.ok());
  CHECK(v->ok);
  CHECK(v->message == "verified 1.." + std::to_string(kAsync + kSyncThreads * kPer));
}

TEST_CASE("AppendAsync on a failing WAL: the continuation gets the error, nothing is acknowledged",
          "[audit][group]") {
  AuditTempDir dir;
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  std::atomic<bool> fail{false};
  AuditTrail::Options o = QuietOptions(nullptr);
  o.wal_fault_for_test = [&](bool) { return fail ? EIO : 0; };
  auto trail = AuditTrail::Open(**env, o);
  REQUIRE(trail.ok());
  REQUIRE((*trail)->Append(SampleRecord(1)).ok());
  fail = true;
  std::optional<Status> got;
  (*trail)->AppendAsync(SampleRecord(2), [&](Status s) { got = s; });
  // No other caller: this thread committed it before returning.
  REQUIRE(got.has_value());
  CHECK(got->code() == Code::kIo);
  fail = false;
  auto v = (*trail)->VerifyChain();
  REQUIRE(v.ok());
  CHECK(v->message == "verified 1..1");
}

TEST_CASE("Append and AppendInTxn interleave (some transactions abort) without breaking the chain",
          "[audit][group][txn]") {
  AuditTempDir dir;
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE(trail.ok());
  auto side = (*env)->OpenDb("test_side", true);
  REQUIRE(side.ok());

  std::atomic<int> failures{0}, committed_in_txn{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        if (!(*trail)->Append(SampleRecord(i)).ok()) ++failures;
      }
    });
  }
  threads.emplace_back([&] {  // the administrative path: change + record in one transaction
    for (int i = 0; i < 100; ++i) {
      auto txn = (*env)->BeginWrite();
      if (!txn.ok() || !txn->Put(*side, "k" + std::to_string(i), "v").ok() ||
          !(*trail)->AppendInTxn(*txn, SampleRecord(i, "PutKeyPolicy")).ok()) {
        ++failures;
        continue;
      }
      if (i % 3 == 0) continue;  // the change failed after its hook: abort
      if (!txn->Commit().ok()) ++failures;
      ++committed_in_txn;
    }
  });
  for (auto& th : threads) th.join();
  REQUIRE(failures == 0);
  const auto all = AllRecords(**trail);
  CHECK(all.size() == 400 + static_cast<size_t>(committed_in_txn.load()));
  size_t admin = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    REQUIRE(all[i].record.sequence == i + 1);
    if (all[i].record.operation == "PutKeyPolicy") ++admin;
  }
  CHECK(admin == static_cast<size_t>(committed_in_txn.load()));
  CHECK((*trail)->VerifyChain()->ok);
}

}  // namespace
}  // namespace kmsfs::keyd
