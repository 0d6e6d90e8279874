// keyd_bench: GenerateDataKey and Decrypt requests per second against a running kmsfs-keyd, over
// its real socket, with 1 and then N concurrent clients (each its own KeydClient connection,
// i.e. one in-flight request per client). Measures what the filesystem pays per file create
// (GenerateDataKey) and per file open (Decrypt), including policy, audit fsync and the socket.
//
//   keyd_bench --key-id KEY [--socket PATH] [--seconds S] [--clients N] [--context k=v]
//              [--op generate|decrypt|both] [--only-n]
// --op limits the run to one operation and --only-n skips the 1-client run (for profiling keyd
// under one steady load).
// The key must allow this caller kms:GenerateDataKey and kms:Decrypt. Output: one human line per
// (operation, clients), then machine lines "<op>_c<N>_per_s X" and "<op>_c<N>_p99_us Y".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/ipc/keyd_client.h"
#include "common/ipc/unix_socket.h"

namespace {

using kmsfs::ipc::KeydClient;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string socket;  // "" = $KMSFS_SOCKET or the default
  std::string key_id;
  double seconds = 5.0;
  int clients = 8;
  bool generate = true;
  bool decrypt = true;
  bool only_n = false;
  kmsfs::ipc::EncryptionContext context = {{"kmsfs:bench", "1"}};
};

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: keyd_bench --key-id KEY [--socket PATH] [--seconds S] [--clients N] "
               "[--context k=v] [--op generate|decrypt|both] [--only-n]\n");
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage();
      return argv[++i];
    };
    if (a == "--socket") {
      o.socket = value();
    } else if (a == "--key-id") {
      o.key_id = value();
    } else if (a == "--seconds") {
      o.seconds = std::atof(value().c_str());
    } else if (a == "--clients") {
      o.clients = std::atoi(value().c_str());
    } else if (a == "--op") {
      const std::string op = value();
      if (op != "generate" && op != "decrypt" && op != "both") Usage();
      o.generate = op != "decrypt";
      o.decrypt = op != "generate";
    } else if (a == "--only-n") {
      o.only_n = true;
    } else if (a == "--context") {
      const std::string kv = value();
      const size_t eq = kv.find('=');
      if (eq == std::string::npos) Usage();
      o.context = {{kv.substr(0, eq), kv.substr(eq + 1)}};
    } else {
      Usage();
    }
  }
  if (o.key_id.empty() || o.seconds <= 0 || o.clients < 1) Usage();
  return o;
}

enum class BenchOp { kGenerateDataKey, kDecrypt };

struct Totals {
  uint64_t ok = 0;
  uint64_t failed = 0;
  std::vector<uint32_t> latencies_us;
  std::string first_error;
};

// One client: its own connection, requests back to back until `stop`.
void RunClient(const Options& o, const std::string& socket, BenchOp op, const kmsfs::Bytes& blob,
               const std::atomic<bool>& stop, Totals* out) {
  KeydClient client(socket);
  out->latencies_us.reserve(1 << 16);
  while (!stop.load(std::memory_order_relaxed)) {
    const auto start = Clock::now();
    bool ok;
    std::string error;
    if (op == BenchOp::kGenerateDataKey) {
      auto r = client.GenerateDataKey(o.key_id, o.context);
      ok = r.ok();
      if (!ok) error = r.error().ToString();
    } else {
      auto r = client.Decrypt(blob, o.context);
      ok = r.ok();
      if (!ok) error = r.error().ToString();
    }
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    if (ok) {
      ++out->ok;
      out->latencies_us.push_back(static_cast<uint32_t>(us.count()));
    } else {
      ++out->failed;
      if (out->first_error.empty()) out->first_error = error;
    }
  }
}

// Returns false when every request failed (nothing to report).
bool Measure(const Options& o, const std::string& socket, BenchOp op, const kmsfs::Bytes& blob,
             int clients) {
  std::atomic<bool> stop{false};
  std::vector<Totals> totals(static_cast<size_t>(clients));
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back(RunClient, std::cref(o), std::cref(socket), op, std::cref(blob),
                         std::cref(stop), &totals[static_cast<size_t>(c)]);
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  stop = true;
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  Totals all;
  for (auto& t : totals) {
    all.ok += t.ok;
    all.failed += t.failed;
    all.latencies_us.insert(all.latencies_us.end(), t.latencies_us.begin(), t.latencies_us.end());
    if (all.first_error.empty()) all.first_error = t.first_error;
  }
  const char* name = op == BenchOp::kGenerateDataKey ? "generate_data_key" : "decrypt";
  if (all.ok == 0) {
    std::fprintf(stderr, "keyd_bench: every %s request failed: %s\n", name,
                 all.first_error.c_str());
    return false;
  }
  std::sort(all.latencies_us.begin(), all.latencies_us.end());
  auto pct = [&](double p) {
    return all.latencies_us[std::min(
        all.latencies_us.size() - 1,
        static_cast<size_t>(p * static_cast<double>(all.latencies_us.size())))];
  };
  const double per_s = static_cast<double>(all.ok) / elapsed;
  std::printf("%-18s clients %2d: %9.0f req/s  p50 %6u us  p99 %6u us  (%llu ok, %llu failed)\n",
              name, clients, per_s, pct(0.50), pct(0.99), static_cast<unsigned long long>(all.ok),
              static_cast<unsigned long long>(all.failed));
  if (all.failed > 0) std::printf("  first failure: %s\n", all.first_error.c_str());
  std::printf("%s_c%d_per_s %.0f\n%s_c%d_p99_us %u\n", name, clients, per_s, name, clients,
              pct(0.99));
  std::fflush(stdout);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  auto socket = kmsfs::ipc::ResolveSocketPath(o.socket);
  if (!socket.ok()) {
    std::fprintf(stderr, "keyd_bench: %s\n", socket.error().message().c_str());
    return 2;
  }
  // One blob to decrypt over and over (what re-opening the same file costs).
  KeydClient setup(*socket);
  auto key = setup.GenerateDataKey(o.key_id, o.context);
  if (!key.ok()) {
    std::fprintf(stderr, "keyd_bench: GenerateDataKey on %s failed: %s\n", o.key_id.c_str(),
                 key.error().ToString().c_str());
    return 1;
  }
  const kmsfs::Bytes blob = key->ciphertext_blob;
  std::printf("keyd_bench: socket %s, key %s, %.1f s per run\n", socket->c_str(), o.key_id.c_str(),
              o.seconds);
  bool ok = true;
  for (BenchOp op : {BenchOp::kGenerateDataKey, BenchOp::kDecrypt}) {
    if (!(op == BenchOp::kGenerateDataKey ? o.generate : o.decrypt)) continue;
    for (int clients : {1, o.clients}) {
      if (clients == 1 && o.only_n && o.clients != 1) continue;
      ok = Measure(o, *socket, op, blob, clients) && ok;
      if (o.clients == 1) break;
    }
  }
  return ok ? 0 : 1;
}
