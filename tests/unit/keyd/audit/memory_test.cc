// keyd's resident set must not grow with the audit trail: commits read the trail's newest pages
// through LMDB's map, and AuditTrail drops those mappings every release_map_every records.
#include <atomic>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "keyd/audit/audit_trail.h"
#include "tests/catch.h"
#include "tests/unit/keyd/audit/audit_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::AuditTempDir;
using testing::QuietOptions;
using testing::SampleRecord;

// KiB of `file` resident in this process's mappings of it (/proc/self/smaps "Rss:").
size_t MappedRssKib(const std::string& file) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  size_t total = 0;
  while (std::getline(smaps, line)) {
    const size_t sp = line.find(' ');
    if (sp != std::string::npos && line.find('-') < sp) {  // "start-end perms ... path"
      inside = line.size() >= file.size() &&
               line.compare(line.size() - file.size(), file.size(), file) == 0;
      continue;
    }
    if (inside && line.rfind("Rss:", 0) == 0) {
      std::istringstream in(line.substr(4));
      size_t kib = 0;
      in >> kib;
      total += kib;
    }
  }
  return total;
}

// Appends `n` records from 8 threads (few commits: group commit) and returns the map's RSS.
size_t AppendAndMeasure(uint64_t release_every, int n, const AuditTempDir& dir,
                        uint64_t wal_bytes = 0) {
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  AuditTrail::Options options = QuietOptions(nullptr);
  options.release_map_every = release_every;
  options.wal_bytes = wal_bytes;
  auto trail = AuditTrail::Open(**env, options);
  REQUIRE(trail.ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < n; i += 8) {
        if (!(*trail)->Append(SampleRecord(i)).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  REQUIRE(failures == 0);
  REQUIRE((*trail)->Flush().ok());  // with a WAL: the last records into LMDB too
  const size_t rss = MappedRssKib(dir.Sub("state") + "/data.mdb");
  auto report = (*trail)->VerifyChain();  // everything is still there and intact
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK((*trail)->GetStats().appended == static_cast<uint64_t>(n));
  return rss;
}

TEST_CASE("the audit trail's LMDB map does not keep the whole trail resident", "[audit][memory]") {
  constexpr int kRecords = 4000;  // ~2.8 MiB of trail
  // Measured on the direct path (wal_bytes 0: every group commit an LMDB transaction), where
  // each commit reads the page the previous one filled; the WAL's large ingests read fewer.
  AuditTempDir without_release, with_release, wal_release;
  const size_t kept = AppendAndMeasure(/*release_every=*/0, kRecords, without_release);
  const size_t released = AppendAndMeasure(/*release_every=*/256, kRecords, with_release);
  WARN("data.mdb resident after " << kRecords << " records: " << kept << " KiB without release, "
                                  << released << " KiB releasing every 256");
  CHECK(kept >= 1024);  // the problem is real: most of the trail stays mapped
  // Releasing keeps at most the pages of the records since the last release (up to 256 plus one
  // group commit) and the hot B-tree pages: a fraction of the trail. Where the last release
  // falls depends on how the 8 threads grouped their commits (CI saw 536 KiB), so the bound is
  // relative to what the trail would keep, with a margin over that worst case.
  CHECK(released * 3 <= kept);
  // With the write-ahead file (ingests of 256 records, releasing every 256), bounded as well.
  const size_t wal = AppendAndMeasure(/*release_every=*/256, kRecords, wal_release, 1 << 20);
  WARN("with the WAL: " << wal << " KiB");
  CHECK(wal * 3 <= kept);
}

}  // namespace
}  // namespace kmsfs::keyd
