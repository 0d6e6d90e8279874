// Test helpers for keyd/audit: private state dirs, sample records, raw access to the audit DBs.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keyd/audit/audit_trail.h"
#include "keyd/store/lmdb_env.h"
#include "tests/catch.h"

namespace kmsfs::keyd::testing {

// A fresh 0700 directory under `base` ("/tmp" by default; "/var/tmp" where the test wants a
// disk-backed fsync), removed with its contents.
class AuditTempDir {
 public:
  explicit AuditTempDir(const std::string& base = "/tmp") {
    std::string tmpl = base + "/kmsfs-audit-XXXXXX";
    const char* p = ::mkdtemp(tmpl.data());
    REQUIRE(p != nullptr);
    path_ = p;
  }
  ~AuditTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  AuditTempDir(const AuditTempDir&) = delete;
  AuditTempDir& operator=(const AuditTempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Deterministic wall clock: starts at 2024-01-01T00:00:00Z and advances 1 ms per reading.
struct StepClock {
  std::atomic<int64_t> now{1'704'067'200'000'000};
  std::function<int64_t()> Fn() {
    return [this] { return now.fetch_add(1000); };
  }
};

inline AuditRecord SampleRecord(int i, std::string op = "Decrypt") {
  AuditRecord r;
  r.operation = std::move(op);
  r.key_id =
      i % 2 ? "1234abcd-0000-0000-0000-000000000001" : "1234abcd-0000-0000-0000-000000000002";
  r.key_version = 1 + i % 3;
  r.principal.uid = 1000 + i % 4;
  r.principal.gid = 1000;
  r.principal.pid = 4000 + i;
  r.principal.executable = "/usr/bin/cat";
  r.principal.unit = "user@1000.service";
  r.encryption_context = {{"kmsfs:VolumeId", "vol-1"}, {"kmsfs:FileId", std::to_string(i)}};
  r.path = (i % 2 ? "/alice/" : "/bob/") + std::to_string(i) + ".txt";
  r.decision = "Allow";
  r.sid = "AllowUsers";
  r.outcome = i % 5 == 4 ? "AccessDeniedException" : "Success";
  r.detail = "record " + std::to_string(i);
  return r;
}

// Every record the trail serves (Tail, page by page), in order.
inline std::vector<TrailRecord> AllRecords(AuditTrail& trail) {
  std::vector<TrailRecord> out;
  uint64_t after = 0;
  for (;;) {
    auto page = trail.Tail(after, 10000);
    REQUIRE(page.ok());
    for (auto& t : page->records) out.push_back(std::move(t));
    if (!page->more) return out;
    after = page->next_after;
  }
}

inline AuditTrail::Options QuietOptions(StepClock* clock) {
  AuditTrail::Options o;
  o.journal = AuditTrail::Journal::kOff;
  if (clock != nullptr) o.clock_us = clock->Fn();
  return o;
}

}  // namespace kmsfs::keyd::testing
