// Group commit: many concurrent appends share few durable commits, and the chain stays whole.
#include <atomic>
#include <map>
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
