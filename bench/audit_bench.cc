// audit_bench: durable audit appends per second through keyd::AuditTrail (hash chain + group
// commit, LMDB fsync on every commit) with 1, 8, ... concurrent appenders on a disk-backed state
// dir, against a no-op AuditSink (what keyd costs with auditing switched off), plus the disk's
// raw fdatasync latency, which bounds commits per second.
//
//   audit_bench [--seconds S] [--dir BASE] [--threads 1,8,32]
// BASE defaults to /var/tmp (a real disk; /tmp may be tmpfs, where fsync is free). A fresh
// BASE/kmsfs-audit-bench-XXXXXX state dir is used per run and removed afterwards.
// Output: one line per (sink, threads): appends/s, commits/s, mean batch, p50/p99 latency; then
// "audit_appends_per_s_T N" lines for scripts.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "keyd/audit/audit_trail.h"
#include "keyd/store/lmdb_env.h"

namespace {

using kmsfs::keyd::AuditRecord;
using kmsfs::keyd::AuditSink;
using kmsfs::keyd::AuditTrail;
using Clock = std::chrono::steady_clock;

struct Options {
  double seconds = 3.0;
  std::string dir = "/var/tmp";
  std::vector<int> threads = {1, 8, 32};
};

[[noreturn]] void Usage() {
  std::fprintf(stderr, "usage: audit_bench [--seconds S] [--dir BASE] [--threads 1,8,32]\n");
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) Usage();
    const std::string v = argv[++i];
    if (arg == "--seconds") {
      o.seconds = std::atof(v.c_str());
    } else if (arg == "--dir") {
      o.dir = v;
    } else if (arg == "--threads") {
      o.threads.clear();
      for (size_t p = 0; p <= v.size();) {
        const size_t comma = std::min(v.find(',', p), v.size());
        o.threads.push_back(std::atoi(v.substr(p, comma - p).c_str()));
        p = comma + 1;
      }
    } else {
      Usage();
    }
  }
  if (o.seconds <= 0 || o.threads.empty()) Usage();
  for (int t : o.threads) {
    if (t <= 0) Usage();
  }
  return o;
}

// The audit-disabled baseline: accepts and forgets.
class NoopSink final : public AuditSink {
 public:
  kmsfs::Status Append(AuditRecord) override { return kmsfs::Status::Ok(); }
};

// A Decrypt-shaped record: what keyd writes per file open.
AuditRecord DecryptRecord(int i) {
  AuditRecord r;
  r.operation = "Decrypt";
  r.key_id = "6f1c2a9e-3b7d-4e0f-9a51-2c8d7e4b1f03";
  r.key_version = 3;
  r.principal = {1000, 1000, 4242, "/usr/bin/postgres", "postgresql.service"};
  r.forwarder = kmsfs::keyd::Principal{0, 0, 777, "/usr/bin/kmsfs", "kmsfs@srv-data.service"};
  r.encryption_context = {{"kmsfs:VolumeId", "4c1f9a0e2b6d8e3f"},
                          {"kmsfs:FileId", std::to_string(100000 + i)}};
  r.path = "/pgdata/base/16384/" + std::to_string(24576 + i % 1000);
  r.decision = "Allow";
  r.sid = "AllowPostgres";
  r.outcome = "Success";
  return r;
}

struct Run {
  double appends_per_s = 0;
  double p50_us = 0, p99_us = 0;
  uint64_t failures = 0;
};

Run Drive(AuditSink& sink, int threads, double seconds) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lat(threads);
  std::atomic<uint64_t> total{0}, failures{0};
  std::vector<std::thread> pool;
  const auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const auto t0 = Clock::now();
        if (!sink.Append(DecryptRecord(i)).ok()) ++failures;
        lat[t].push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        total.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  Run r;
  r.appends_per_s = static_cast<double>(total.load()) / elapsed;
  if (!all.empty()) {
    r.p50_us = all[all.size() / 2];
    r.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  r.failures = failures.load();
  return r;
}

// Median latency of write(4 KiB) + fdatasync in `dir`: the floor under one LMDB commit (which
// syncs twice: data pages, then the meta page).
double FdatasyncMicros(const std::string& dir) {
  const std::string path = dir + "/fsync-probe";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  std::vector<double> us;
  const std::string page(4096, 'x');
  for (int i = 0; i < 50; ++i) {
    const auto t0 = Clock::now();
    if (::pwrite(fd, page.data(), page.size(), 0) != static_cast<ssize_t>(page.size()) ||
        ::fdatasync(fd) != 0) {
      break;
    }
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  ::close(fd);
  ::unlink(path.c_str());
  if (us.empty()) return -1;
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  std::string tmpl = o.dir + "/kmsfs-audit-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string base = tmpl;
  std::printf("state under %s; fdatasync(4 KiB) median %.0f us\n", base.c_str(),
              FdatasyncMicros(base));

  NoopSink noop;
  for (int t : o.threads) {
    const Run r = Drive(noop, t, std::min(o.seconds, 1.0));
    std::printf("%-14s threads=%-3d %12.0f appends/s\n", "noop", t, r.appends_per_s);
    std::printf("noop_appends_per_s_%d %.0f\n", t, r.appends_per_s);
  }
  int exit_code = 0;
  for (int t : o.threads) {
    {
      const std::string state = base + "/state-" + std::to_string(t);
      auto env = kmsfs::keyd::Env::Open(state);
      if (!env.ok()) {
        std::fprintf(stderr, "%s\n", env.error().ToString().c_str());
        return 1;
      }
      AuditTrail::Options options;
      options.journal = AuditTrail::Journal::kOff;
      auto trail = AuditTrail::Open(**env, options);
      if (!trail.ok()) {
        std::fprintf(stderr, "%s\n", trail.error().ToString().c_str());
        return 1;
      }
      const Run r = Drive(**trail, t, o.seconds);
      const AuditTrail::Stats s = (*trail)->GetStats();
      const double commits_per_s = static_cast<double>(s.commits) * r.appends_per_s /
                                   std::max<double>(1.0, static_cast<double>(s.appended));
      std::printf(
          "%-14s threads=%-3d %12.0f appends/s %8.0f commits/s  mean batch %5.1f  "
          "max batch %4llu  p50 %7.0f us  p99 %7.0f us  failures %llu\n",
          "audit", t, r.appends_per_s, commits_per_s,
          s.commits ? static_cast<double>(s.appended) / static_cast<double>(s.commits) : 0.0,
          static_cast<unsigned long long>(s.max_batch), r.p50_us, r.p99_us,
          static_cast<unsigned long long>(r.failures));
      std::printf("audit_appends_per_s_%d %.0f\n", t, r.appends_per_s);
      auto v = (*trail)->VerifyChain();
      if (!v.ok() || !v->ok) {
        std::fprintf(stderr, "chain does not verify after the run: %s\n",
                     v.ok() ? v->message.c_str() : v.error().ToString().c_str());
        exit_code = 1;
      }
      if (r.failures != 0) exit_code = 1;
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(base, ec);
  return exit_code;
}
