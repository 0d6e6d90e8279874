// Stress (issue 7, docs/reliability.md §7): 16 processes doing mixed I/O on one real kmsfs mount
// over a real keyd for a bounded time (KMSFS_STRESS_SECONDS, default 60; KMSFS_STRESS_PROCS,
// default 16; KMSFS_STRESS_SEED), on private and shared files, checked for lost or foreign
// writes while running and at the end, before and after a remount:
//   - private files: each process keeps the exact content model and compares on every read;
//   - shared files: each process owns distinct slots — whole 4 KiB blocks in "aligned", and
//     1500-byte slots that share blocks with other writers in "unaligned" (kmsfs must serialize
//     its read-modify-write of a block: a lost update shows here) — and every slot's content says
//     who wrote which version, so any read of any slot is checkable, and the final content is
//     exactly each owner's last version;
//   - a watchdog: no process may go 60 s without progress (deadlock), and kmsfs must stay up.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

constexpr size_t kSlotsPerProc = 8;

// The shared files: slot geometry.
struct Shared {
  const char* name;
  size_t slot;  // bytes per slot
};
constexpr Shared kShared[] = {{"aligned", 4096}, {"unaligned", 1500}};

// The bytes of `slot` (global index) at `version` written by `proc`: a readable prefix naming all
// three, then bytes derived from them, so that any read of a slot can be checked.
std::string SlotData(size_t file, size_t slot, uint32_t proc, uint32_t version, size_t len) {
  char head[48];
  const int n = std::snprintf(head, sizeof head, "F%zuS%zuP%uV%u|", file, slot, proc, version);
  std::string s(head, static_cast<size_t>(n));
  std::mt19937 gen(static_cast<uint32_t>(file * 1000003 + slot * 7919 + version * 31 + proc));
  while (s.size() < len) s.push_back(static_cast<char>('a' + gen() % 26));
  s.resize(len);
  return s;
}

// "" if `got` is a valid content of the slot (never written: zeros; else some version of it by
// its owner), else a description.
std::string CheckSlot(size_t file, size_t slot, size_t procs, const std::string& got) {
  if (got.find_first_not_of('\0') == std::string::npos) return "";
  size_t f = 0, s = 0;
  unsigned p = 0, v = 0;
  if (std::sscanf(got.c_str(), "F%zuS%zuP%uV%u|", &f, &s, &p, &v) != 4) {
    return "slot " + std::to_string(slot) + " holds bytes nobody wrote there";
  }
  if (f != file || s != slot || p != slot % procs) {
    return "slot " + std::to_string(slot) + " holds slot " + std::to_string(s) + " of file " +
           std::to_string(f) + " by process " + std::to_string(p);
  }
  // A read racing the owner's write may see the new bytes in one 4 KiB block and the old ones
  // in the next (Linux makes no read/write atomicity promise across pages, and kmsfs works block
  // by block): each block's part of the slot must be some nearby version, never foreign bytes.
  const size_t slot_size = kShared[file].slot;
  const size_t base = slot * slot_size;
  for (size_t at = 0; at < got.size();) {
    const size_t end = std::min(got.size(), (base + at) / 4096 * 4096 + 4096 - base);
    bool match = got.compare(at, end - at, std::string(end - at, '\0')) == 0;
    for (uint32_t w = v > 64 ? v - 64 : 1; w <= v + 64 && !match; ++w) {
      match = got.compare(at, end - at, SlotData(file, slot, p, w, got.size()), at, end - at) == 0;
    }
    if (!match) {
      return "slot " + std::to_string(slot) + " (version " + std::to_string(v) + ") holds bytes " +
             std::to_string(at) + ".." + std::to_string(end) + " of no version of it";
    }
    at = end;
  }
  return "";
}

bool PreadAll(int fd, std::string& buf, off_t off) {
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n =
        ::pread(fd, buf.data() + done, buf.size() - done, off + static_cast<off_t>(done));
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}
bool PwriteAll(int fd, const std::string& buf, off_t off) {
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n =
        ::pwrite(fd, buf.data() + done, buf.size() - done, off + static_cast<off_t>(done));
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::string ReadWhole(const std::string& path, int* err) {
  *err = 0;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    return "";
  }
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      *err = errno;
      break;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// One worker process. Returns its failures (empty = all good); writes its final shared-slot
// versions to `versions` as lines "file slot version".
std::vector<std::string> Worker(const std::string& mnt, uint32_t me, size_t procs, uint64_t seed,
                                std::chrono::steady_clock::time_point end,
                                std::atomic<uint64_t>* progress, std::string& versions) {
  std::vector<std::string> fail;
  std::mt19937_64 rng(seed * 7777 + me);
  std::map<std::string, std::string> priv;            // relative name -> exact content
  std::map<std::pair<size_t, size_t>, uint32_t> ver;  // (file, slot) -> last version written
  auto err = [&](const std::string& what) {
    if (fail.size() < 20) fail.push_back("process " + std::to_string(me) + ": " + what);
  };
  int shared_fd[2];
  for (size_t f = 0; f < 2; ++f) {
    shared_fd[f] = ::open((mnt + "/" + kShared[f].name).c_str(), O_RDWR | O_CLOEXEC);
    if (shared_fd[f] < 0) err(std::string("open shared: ") + std::strerror(errno));
  }
  if (!fail.empty()) return fail;
  for (int k = 0; k < 3; ++k) priv["p" + std::to_string(me) + "_" + std::to_string(k)] = "";
  for (const auto& [name, c] : priv) {
    const int fd =
        ::open((mnt + "/" + name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
      err("create " + name + ": " + std::strerror(errno));
    else
      ::close(fd);
  }
  while (std::chrono::steady_clock::now() < end && fail.empty()) {
    progress->fetch_add(1, std::memory_order_relaxed);
    const int r = static_cast<int>(rng() % 100);
    if (r < 40) {
      // Shared: write one of my slots, then read it back through another fd.
      const size_t f = rng() % 2;
      const size_t slot = me + procs * (rng() % kSlotsPerProc);
      const uint32_t v = ++ver[{f, slot}];
      const std::string d = SlotData(f, slot, me, v, kShared[f].slot);
      const off_t off = static_cast<off_t>(slot * kShared[f].slot);
      if (!PwriteAll(shared_fd[f], d, off)) {
        err(std::string("write shared: ") + std::strerror(errno));
        break;
      }
      std::string got(d.size(), '\0');
      if (!PreadAll(shared_fd[f], got, off) || got != d) {
        err(std::string(kShared[f].name) + ": my slot " + std::to_string(slot) +
            " does not read back what I just wrote");
      }
    } else if (r < 55) {
      // Shared: read any slots, owned by anyone.
      const size_t f = rng() % 2;
      const size_t first = rng() % (procs * kSlotsPerProc);
      const size_t n = 1 + rng() % 6;
      std::string got(n * kShared[f].slot, '\0');
      const off_t off = static_cast<off_t>(first * kShared[f].slot);
      const ssize_t rd = ::pread(shared_fd[f], got.data(), got.size(), off);
      if (rd < 0) {
        err(std::string("read shared: ") + std::strerror(errno));
        break;
      }
      got.resize(static_cast<size_t>(rd));
      for (size_t i = 0; i * kShared[f].slot < got.size(); ++i) {
        const size_t slot = first + i;
        if (slot >= procs * kSlotsPerProc) break;
        std::string one = got.substr(i * kShared[f].slot, kShared[f].slot);
        if (one.size() < kShared[f].slot) break;
        const std::string bad = CheckSlot(f, slot, procs, one);
        if (!bad.empty()) err(std::string(kShared[f].name) + ": " + bad);
        if (slot % procs == me && ver.count({f, slot})) {
          if (one != SlotData(f, slot, me, ver[{f, slot}], kShared[f].slot)) {
            err(std::string(kShared[f].name) + ": my slot " + std::to_string(slot) +
                " lost my last write");
          }
        }
      }
    } else {
      // Private files: write / append / truncate / read-compare / fsync / rename round trip.
      auto it = priv.begin();
      std::advance(it, static_cast<long>(rng() % priv.size()));
      const std::string name = it->first;
      std::string& model = it->second;
      const std::string path = mnt + "/" + name;
      const int op = static_cast<int>(rng() % 6);
      if (op == 0 || op == 1) {
        const int fd = ::open(path.c_str(), O_WRONLY | (op == 1 ? O_APPEND : 0) | O_CLOEXEC);
        if (fd < 0) {
          err("open " + name + ": " + std::strerror(errno));
          break;
        }
        const size_t len = 1 + rng() % 10000;
        const size_t off = op == 1 ? model.size() : rng() % (model.size() + 5000);
        std::string d(len, '\0');
        for (auto& c : d) c = static_cast<char>(rng());
        const bool ok = op == 1 ? ::write(fd, d.data(), d.size()) == static_cast<ssize_t>(len)
                                : PwriteAll(fd, d, static_cast<off_t>(off));
        if (!ok) err("write " + name + ": " + std::strerror(errno));
        ::close(fd);
        if (model.size() < off + len) model.resize(off + len, '\0');
        model.replace(off, len, d);
        if (model.size() > 200000) {
          model.resize(1000);
          if (::truncate(path.c_str(), 1000) != 0)
            err("truncate: " + std::string(std::strerror(errno)));
        }
      } else if (op == 2) {
        const size_t n = rng() % (model.size() + 8000);
        if (::truncate(path.c_str(), static_cast<off_t>(n)) != 0) {
          err("truncate " + name + ": " + std::strerror(errno));
        }
        model.resize(n, '\0');
      } else if (op == 3) {
        int e = 0;
        const std::string got = ReadWhole(path, &e);
        if (e != 0)
          err("read " + name + ": " + std::strerror(e));
        else if (got != model) {
          err(name + " differs from what was written (" + std::to_string(got.size()) + " vs " +
              std::to_string(model.size()) + " bytes)");
        }
      } else if (op == 4) {
        const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ::fsync(fd) != 0) err("fsync " + name + ": " + std::strerror(errno));
        if (fd >= 0) ::close(fd);
      } else {
        const std::string tmp = path + ".mv";
        if (::rename(path.c_str(), tmp.c_str()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
          err("rename " + name + ": " + std::strerror(errno));
        }
      }
    }
  }
  // Final self-check of the private files.
  for (const auto& [name, model] : priv) {
    int e = 0;
    const std::string got = ReadWhole(mnt + "/" + name, &e);
    if (e != 0 || got != model) err("final: " + name + " is not what was written");
  }
  for (const auto& [fs, v] : ver) {
    versions +=
        std::to_string(fs.first) + " " + std::to_string(fs.second) + " " + std::to_string(v) + "\n";
  }
  for (int fd : shared_fd) ::close(fd);
  return fail;
}

// Verifies the shared files against every owner's last version.
std::vector<std::string> CheckShared(const std::string& mnt, size_t procs,
                                     const std::map<std::pair<size_t, size_t>, uint32_t>& last) {
  std::vector<std::string> bad;
  for (size_t f = 0; f < 2; ++f) {
    int e = 0;
    const std::string all = ReadWhole(mnt + "/" + kShared[f].name, &e);
    if (e != 0) {
      bad.push_back(std::string(kShared[f].name) + ": " + std::strerror(e));
      continue;
    }
    for (size_t slot = 0; slot < procs * kSlotsPerProc; ++slot) {
      const size_t pos = slot * kShared[f].slot;
      std::string got = pos < all.size() ? all.substr(pos, kShared[f].slot) : std::string();
      got.resize(kShared[f].slot, '\0');  // past EOF reads as never written
      auto it = last.find({f, slot});
      const std::string want =
          it == last.end()
              ? std::string(kShared[f].slot, '\0')
              : SlotData(f, slot, static_cast<uint32_t>(slot % procs), it->second, kShared[f].slot);
      if (got != want) {
        bad.push_back(std::string(kShared[f].name) + ": slot " + std::to_string(slot) +
                      " is not its owner's last write (" + CheckSlot(f, slot, procs, got) + ")");
      }
    }
  }
  return bad;
}

TEST_CASE("16 processes of mixed I/O lose no write and do not deadlock", "[stress]") {
  const uint64_t seconds = EnvU64("KMSFS_STRESS_SECONDS", 60);
  const size_t procs = EnvU64("KMSFS_STRESS_PROCS", 16);
  const uint64_t seed =
      EnvU64("KMSFS_STRESS_SEED",
             static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) %
                 1000000007);
  std::printf("stress: KMSFS_STRESS_SEED=%llu, %zu processes, %llus\n",
              static_cast<unsigned long long>(seed), procs,
              static_cast<unsigned long long>(seconds));
  std::fflush(stdout);
  MountedVolume v;
  for (const auto& s : kShared) WriteFile(v.P(s.name), "");

  auto* progress = static_cast<std::atomic<uint64_t>*>(
      ::mmap(nullptr, procs * sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  REQUIRE(progress != MAP_FAILED);
  for (size_t i = 0; i < procs; ++i) new (&progress[i]) std::atomic<uint64_t>(0);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<pid_t> pids;
  std::fflush(nullptr);
  for (size_t i = 0; i < procs; ++i) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      std::string versions;
      auto fail =
          Worker(v.mountpoint, static_cast<uint32_t>(i), procs, seed, end, &progress[i], versions);
      std::ofstream out(v.box.Path("worker-" + std::to_string(i)));
      out << versions << "--\n";
      for (const auto& f : fail) out << f << "\n";
      out.close();
      ::_exit(fail.empty() ? 0 : 1);
    }
    pids.push_back(pid);
  }

  // The watchdog: every process must make progress; all must end shortly after the deadline.
  std::vector<uint64_t> seen(procs, 0);
  std::vector<std::chrono::steady_clock::time_point> last_move(procs,
                                                               std::chrono::steady_clock::now());
  std::vector<bool> done(procs, false);
  std::vector<std::string> problems;
  size_t running = procs;
  while (running > 0) {
    for (size_t i = 0; i < procs; ++i) {
      if (done[i]) continue;
      int status = 0;
      if (::waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        done[i] = true;
        --running;
        if (!WIFEXITED(status)) problems.push_back("process " + std::to_string(i) + " crashed");
        continue;
      }
      const uint64_t now = progress[i].load();
      if (now != seen[i]) {
        seen[i] = now;
        last_move[i] = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - last_move[i] > std::chrono::seconds(60)) {
        problems.push_back("process " + std::to_string(i) + " made no progress for 60 s: deadlock");
        for (size_t j = 0; j < procs; ++j) {
          if (!done[j]) ::kill(pids[j], SIGKILL);
        }
        std::printf("stress: DEADLOCK; kmsfs threads:\n");
        (void)!std::system(("for t in /proc/" + std::to_string(v.mount->pid()) +
                            "/task/*; do echo \"$t $(cat $t/wchan)\"; cat $t/stack 2>/dev/null | "
                            "head -5; done")
                               .c_str());
        for (size_t j = 0; j < procs; ++j) {
          if (!done[j]) ::waitpid(pids[j], nullptr, 0), done[j] = true;
        }
        running = 0;
        break;
      }
    }
    ::usleep(50'000);  // the watchdog's sampling period
  }
  uint64_t total_ops = 0;
  for (size_t i = 0; i < procs; ++i) total_ops += progress[i].load();
  ::munmap(progress, procs * sizeof(std::atomic<uint64_t>));
  CHECK(v.mount->running());

  std::map<std::pair<size_t, size_t>, uint32_t> last;
  for (size_t i = 0; i < procs; ++i) {
    std::ifstream in(v.box.Path("worker-" + std::to_string(i)));
    std::string line;
    bool in_failures = false;
    while (std::getline(in, line)) {
      if (line == "--") {
        in_failures = true;
      } else if (in_failures) {
        problems.push_back(line);
      } else {
        std::istringstream f(line);
        size_t file = 0, slot = 0;
        uint32_t version = 0;
        f >> file >> slot >> version;
        last[{file, slot}] = version;
      }
    }
  }
  for (const auto& b : CheckShared(v.mountpoint, procs, last)) problems.push_back(b);
  // And the same after a remount: what is on disk, not what a cache holds.
  v.Remount();
  for (const auto& b : CheckShared(v.mountpoint, procs, last)) problems.push_back("remount: " + b);
  std::printf("stress: seed %llu: %llu operations by %zu processes in %llus, %zu problems\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(total_ops),
              procs, static_cast<unsigned long long>(seconds), problems.size());
  for (const auto& p : problems) std::printf("stress: PROBLEM %s\n", p.c_str());
  CHECK(problems.empty());
  CHECK(total_ops > procs * 10);
  CheckLog(v.mount->Log(), {}, {v.box.root_key_hex()});
}

}  // namespace
}  // namespace kmsfs::it
