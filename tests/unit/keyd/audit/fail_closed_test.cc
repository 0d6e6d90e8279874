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

TEST_CASE("a full disk makes Append fail with ENOSPC, and it recovers", "[audit][fail-closed]") {
  if (::geteuid() != 0) {
    WARN("SKIPPED: mounting the 1 MiB tmpfs this test fills needs root (CI runs tests as root)");
    return;
  }
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
  auto trail = AuditTrail::Open(**env, options);
  REQUIRE(trail.ok());
  for (int i = 1; i <= 20; ++i) REQUIRE((*trail)->Append(SampleRecord(i)).ok());

  const std::string filler = mnt + "/filler";
  FillUp(filler);

  // Freed LMDB pages can absorb a few records; the file must grow soon, and then it cannot.
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

  // Still full: every further request is refused too, but logged loudly only once.
  for (int i = 0; i < 5; ++i) CHECK((*trail)->Append(SampleRecord(2000 + i)).code() == Code::kIo);
  AuditTrail::Stats stats = (*trail)->GetStats();
  CHECK(stats.failed_commits == 6);
  CHECK(stats.loud_logs == 1);
  CHECK((*trail)->VerifyChain()->ok);  // nothing half-written

  REQUIRE(::unlink(filler.c_str()) == 0);  // space returns
  REQUIRE((*trail)->Append(SampleRecord(3000)).ok());

  auto all = (*trail)->Tail(0, 10000);
  REQUIRE(all.ok());
  REQUIRE(all->records.size() == 20 + accepted_while_full + 1);
  for (size_t i = 0; i < all->records.size(); ++i) {
    CHECK(all->records[i].record.sequence == i + 1);
  }
  for (int i = 0; i < 20; ++i) CHECK(all->records[i].record.detail == SampleRecord(i + 1).detail);
  CHECK(all->records.back().record.detail == SampleRecord(3000).detail);
  auto v = (*trail)->VerifyChain();
  CHECK(v->ok);
  CHECK(v->last == 20 + accepted_while_full + 1);
}

}  // namespace
}  // namespace kmsfs::keyd
