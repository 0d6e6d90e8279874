// Fail closed on a full disk: Append reports ENOSPC (the service then denies), logs loudly but
// rate-limited, loses nothing already committed, and recovers as soon as space returns.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/base/scope_exit.h"
#include "keyd/audit/audit_trail.h"
#include "tests/catch.h"
#include "tests/unit/keyd/audit/audit_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::AuditTempDir;
using testing::QuietOptions;
using testing::SampleRecord;
using testing::StepClock;

// Writes `path` until the filesystem is full. Returns the bytes written.
size_t FillUp(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  const std::string chunk(4096, 'x');
  size_t total = 0;
  for (;;) {
    const ssize_t n = ::write(fd, chunk.data(), chunk.size());
    if (n <= 0) {
      REQUIRE(errno == ENOSPC);
      break;
    }
    total += static_cast<size_t>(n);
  }
  ::close(fd);
  return total;
}

// With the write-ahead file (wal_bytes > 0), records keep being accepted after the disk filled —
// the WAL is preallocated, so they ARE durable — until the next ingest into LMDB fails; from then
// on every batch is refused until space returns. Without it, the first record that LMDB cannot
// grow for is refused.
void FullDiskCase(uint64_t wal_bytes) {
  AuditTempDir base;
  const std::string mnt = base.Sub("mnt");
  REQUIRE(::mkdir(mnt.c_str(), 0700) == 0);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0700") != 0) {
    WARN("SKIPPED: cannot mount a tmpfs here (" << std::strerror(errno)
                                                << "); a container without CAP_SYS_ADMIN?");
    return;
  }
  ScopeExit unmount([&] { ::umount2(mnt.c_str(), MNT_DETACH); });

  StepClock clock;
  auto env = Env::Open(mnt + "/state");
  REQUIRE(env.ok());
  AuditTrail::Options options = QuietOptions(&clock);
  options.failure_log_interval_us = 3'600'000'000;  // one loud line for the whole test
  options.wal_bytes = wal_bytes;
  auto trail = AuditTrail::Open(**env, options);
  REQUIRE(trail.ok());
  for (int i = 1; i <= 20; ++i) REQUIRE((*trail)->Append(SampleRecord(i)).ok());

  const std::string filler = mnt + "/filler";
  FillUp(filler);

  // Freed LMDB pages can absorb a few records, the WAL up to ingest_every (256); then an LMDB
  // commit must grow the file, and it cannot.
  Status failed;
  uint64_t accepted_while_full = 0;
  for (int i = 0; i < 5000 && failed.ok(); ++i) {
    failed = (*trail)->Append(SampleRecord(1000 + i));
    if (failed.ok()) ++accepted_while_full;
  }
  REQUIRE_FALSE(failed.ok());
  INFO(failed.ToString());
  CHECK(failed.code() == Code::kIo);
  CHECK(failed.error().sys_errno() == ENOSPC);
  CHECK(accepted_while_full <= 256 + 5);  // what the integration test's 500 requests rely on

  // Still full: every further request is refused too, but logged loudly only once.
  for (int i = 0; i < 5; ++i) CHECK((*trail)->Append(SampleRecord(2000 + i)).code() == Code::kIo);
  AuditTrail::Stats stats = (*trail)->GetStats();
  CHECK(stats.failed_commits == 6);
  CHECK(stats.loud_logs == 1);
  if (wal_bytes > 0) CHECK(stats.failed_ingests == 6);  // each refused batch retried the ingest
  CHECK((*trail)->Head()->sequence == 20 + accepted_while_full);

  REQUIRE(::unlink(filler.c_str()) == 0);  // space returns
  REQUIRE((*trail)->Append(SampleRecord(3000)).ok());

  // Everything acknowledged is in the trail — also what was accepted while the disk was full —
  // and nothing that was refused.
  auto all = (*trail)->Tail(0, 10000);
  REQUIRE(all.ok());
  REQUIRE(all->records.size() == 20 + accepted_while_full + 1);
  for (size_t i = 0; i < all->records.size(); ++i) {
    CHECK(all->records[i].record.sequence == i + 1);
  }
  for (int i = 0; i < 20; ++i) CHECK(all->records[i].record.detail == SampleRecord(i + 1).detail);
  for (uint64_t i = 0; i < accepted_while_full; ++i) {
    CHECK(all->records[20 + i].record.detail == SampleRecord(1000 + static_cast<int>(i)).detail);
  }
  CHECK(all->records.back().record.detail == SampleRecord(3000).detail);
  auto v = (*trail)->VerifyChain();  // ingests what was pending: LMDB has room again
  CHECK(v->ok);
  CHECK(v->last == 20 + accepted_while_full + 1);

  // And after a restart (the WAL replayed or already ingested), the same.
  trail->reset();
  env->reset();
  env = Env::Open(mnt + "/state");
  REQUIRE(env.ok());
  trail = AuditTrail::Open(**env, options);
  REQUIRE(trail.ok());
  CHECK((*trail)->VerifyChain()->last == 20 + accepted_while_full + 1);
}

TEST_CASE("a full disk makes Append fail with ENOSPC, and it recovers", "[audit][fail-closed]") {
  if (::geteuid() != 0) {
    WARN("SKIPPED: mounting the 1 MiB tmpfs this test fills needs root (CI runs tests as root)");
    return;
  }
  SECTION("with the write-ahead file") { FullDiskCase(256 * 1024); }
  SECTION("without it (wal_bytes 0: every commit in LMDB)") { FullDiskCase(0); }
}

// keyd stopped while the disk was full (its last Flush failed, so records are pending in
// audit.wal) and starts again while it is still full: the replay's LMDB commit fails, yet Open
// succeeds, fail-closed — the records are readable, requests are refused — and once space
// returns the next Append ingests them and continues the chain.
TEST_CASE("Open with records pending in the WAL on a full disk starts fail-closed",
          "[audit][fail-closed]") {
  if (::geteuid() != 0) {
    WARN("SKIPPED: mounting the 4 MiB tmpfs this test fills needs root (CI runs tests as root)");
    return;
  }
  AuditTempDir base;
  const std::string mnt = base.Sub("mnt");
  REQUIRE(::mkdir(mnt.c_str(), 0700) == 0);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0700") != 0) {
    WARN("SKIPPED: cannot mount a tmpfs here (" << std::strerror(errno) << ")");
    return;
  }
  ScopeExit unmount([&] { ::umount2(mnt.c_str(), MNT_DETACH); });
  const std::string state = mnt + "/state";
  const std::string filler = mnt + "/filler";

  StepClock clock;
  AuditTrail::Options options = QuietOptions(&clock);
  options.failure_log_interval_us = 3'600'000'000;
  options.wal_bytes = uint64_t{2} << 20;
  options.ingest_every = 1'000'000;  // nothing reaches LMDB but by Flush
  constexpr int kInLmdb = 10, kInWal = 1500;
  {
    auto env = Env::Open(state);
    REQUIRE(env.ok());
    auto trail = AuditTrail::Open(**env, options);
    REQUIRE(trail.ok());
    for (int i = 1; i <= kInLmdb; ++i) REQUIRE((*trail)->Append(SampleRecord(i)).ok());
    REQUIRE((*trail)->Flush().ok());
    for (int i = kInLmdb + 1; i <= kInLmdb + kInWal; ++i) {
      REQUIRE((*trail)->Append(SampleRecord(i)).ok());
    }
    FillUp(filler);
    CHECK((*trail)->Flush().code() == Code::kIo);  // so the destructor's Flush fails too
  }

  auto env = Env::Open(state);
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, options);
  INFO((trail.ok() ? std::string("ok") : trail.error().ToString()));
  REQUIRE(trail.ok());
  CHECK((*trail)->GetStats().failed_ingests == 1);
  auto all = (*trail)->Tail(0, 10000);  // the pending records are served from the WAL
  REQUIRE(all.ok());
  REQUIRE(all->records.size() == kInLmdb + kInWal);
  CHECK(all->records.back().record.detail == SampleRecord(kInLmdb + kInWal).detail);

  // Fail closed, as at runtime: refused with ENOSPC, nothing written.
  for (int i = 0; i < 3; ++i) {
    Status s = (*trail)->Append(SampleRecord(5000 + i));
    CHECK(s.code() == Code::kIo);
    CHECK(s.error().sys_errno() == ENOSPC);
  }
  CHECK((*trail)->Head()->sequence == kInLmdb + kInWal);

  REQUIRE(::unlink(filler.c_str()) == 0);  // space returns
  REQUIRE((*trail)->Append(SampleRecord(6000)).ok());
  CHECK((*trail)->GetStats().ingests == 1);
  auto v = (*trail)->VerifyChain();
  REQUIRE(v.ok());
  CHECK(v->ok);
  CHECK(v->last == kInLmdb + kInWal + 1);
  auto last = (*trail)->Tail(kInLmdb + kInWal, 10);
  REQUIRE(last.ok());
  REQUIRE(last->records.size() == 1);
  CHECK(last->records[0].record.detail == SampleRecord(6000).detail);

  // And a restart with space: the same trail.
  trail->reset();
  env->reset();
  env = Env::Open(state);
  REQUIRE(env.ok());
  trail = AuditTrail::Open(**env, options);
  REQUIRE(trail.ok());
  CHECK((*trail)->VerifyChain()->last == kInLmdb + kInWal + 1);
}

}  // namespace
}  // namespace kmsfs::keyd
