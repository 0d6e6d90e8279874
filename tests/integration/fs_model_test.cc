// Integration: a randomized model-based test of a real kmsfs mount. Thousands of random operations
// (pwrite at random offsets and sizes, ftruncate up and down, close + reopen, rename, link,
// unlink, mmap(MAP_SHARED) writes, remounts) go to the mount and to an in-memory model; the touched
// range is compared after every step and the whole tree every kFullCompareEvery steps.
//
//   KMSFS_MODEL_OPS   number of operations (default 3000: the fixed CI budget, ~10-30 s)
//   KMSFS_MODEL_SEED  the seed (default fixed, for a reproducible CI run); "random" draws one.
// Every failure prints the seed and the step, so `KMSFS_MODEL_SEED=<seed>` replays it.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

constexpr uint64_t kDefaultSeed = 0x6b6d7366'00000004;  // "kmsf", issue 4
constexpr int kDefaultOps = 3000;
constexpr int kFullCompareEvery = 100;
constexpr int kRemounts = 3;               // spread evenly over the run
constexpr size_t kMaxOffset = 600 * 1024;  // beyond one group (512 KiB of plaintext)
constexpr size_t kMaxWrite = 70 * 1024;
constexpr size_t kPage = 4096;

// The names the model draws from: two directories, a few files each.
const std::vector<std::string> kNames = {"d0/a", "d0/b", "d0/c", "d1/a", "d1/long-name-x"};

// One file as the model sees it: its contents and the handle kept open on the mount (-1: none).
struct Inode {
  std::string data;
  int fd = -1;
};

uint64_t SeedFromEnv() {
  const char* s = std::getenv("KMSFS_MODEL_SEED");
  if (s == nullptr || *s == '\0') return kDefaultSeed;
  if (std::string(s) == "random")
    return std::random_device{}() * 0x100000001ull ^ std::random_device{}();
  return std::strtoull(s, nullptr, 0);
}

int OpsFromEnv() {
  const char* s = std::getenv("KMSFS_MODEL_OPS");
  if (s == nullptr || *s == '\0') return kDefaultOps;
  return std::max(1, std::atoi(s));
}

std::string PreadAll(int fd, size_t off, size_t len) {
  std::string out(len, '\0');
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pread(fd, out.data() + done, len - done, static_cast<off_t>(off + done));
    INFO("pread: " << std::strerror(errno));
    REQUIRE(n >= 0);
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

void PwriteAll(int fd, const std::string& data, size_t off) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n =
        ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(off + done));
    INFO("pwrite: " << std::strerror(errno));
    REQUIRE(n > 0);
    done += static_cast<size_t>(n);
  }
}

// Where the first difference is (so a failure message stays short).
std::string FirstDiff(const std::string& got, const std::string& want) {
  std::ostringstream s;
  s << "size got " << got.size() << " want " << want.size();
  const size_t n = std::min(got.size(), want.size());
  for (size_t i = 0; i < n; ++i) {
    if (got[i] != want[i]) {
      s << ", first difference at byte " << i << " (block " << i / kPage << ")";
      break;
    }
  }
  return s.str();
}

class Model {
 public:
  Model(MountedVolume& v, uint64_t seed) : v_(v), rng_(seed) {}
  ~Model() { CloseAll(); }

  std::string Step(int step) {
    const int roll = Uniform(0, 99);
    if (roll < 30) return Write();
    if (roll < 40) return Truncate();
    if (roll < 50) return Reopen();
    if (roll < 60) return Rename();
    if (roll < 67) return Link();
    if (roll < 75) return Unlink();
    if (roll < 87) return MmapWrite();
    (void)step;
    return Create();
  }

  void CloseAll() {
    for (auto& [name, inode] : names_) {
      if (inode->fd >= 0) {
        CHECK(::close(inode->fd) == 0);
        inode->fd = -1;
      }
    }
  }

  // Every name in the model exists on the mount with the model's contents (read through a fresh
  // open), hard links share an inode, and the directories hold nothing else.
  void FullCompare() {
    std::map<const Inode*, ino_t> inos;
    for (const auto& [name, inode] : names_) {
      INFO("full compare of " << name);
      struct stat st;
      REQUIRE(::stat(v_.P(name).c_str(), &st) == 0);
      CHECK(static_cast<size_t>(st.st_size) == inode->data.size());
      CHECK(st.st_nlink == static_cast<nlink_t>(LinkCount(inode.get())));
      auto [it, fresh] = inos.emplace(inode.get(), st.st_ino);
      CHECK(it->second == st.st_ino);
      for (const auto& [other, ino] : inos) {
        if (other != inode.get()) CHECK(ino != st.st_ino);
      }
      const std::string got = ReadFile(v_.P(name));
      INFO(FirstDiff(got, inode->data));
      const bool same = got == inode->data;
      REQUIRE(same);
    }
    std::set<std::string> on_mount;
    for (const std::string dir : {"d0", "d1"}) {
      for (const auto& e : std::filesystem::directory_iterator(v_.P(dir))) {
        on_mount.insert(dir + "/" + e.path().filename().string());
      }
    }
    std::set<std::string> in_model;
    for (const auto& [name, inode] : names_) in_model.insert(name);
    CHECK(on_mount == in_model);
  }

  size_t files() const { return names_.size(); }

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  size_t USize(size_t lo, size_t hi) { return std::uniform_int_distribution<size_t>(lo, hi)(rng_); }

  std::string Bytes(size_t n) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; i += 8) {
      const uint64_t r = rng_();
      std::memcpy(s.data() + i, &r, std::min<size_t>(8, n - i));
    }
    return s;
  }

  // Offsets that like block and group edges: a third exact multiples of 4 KiB (or one off).
  size_t Offset() {
    size_t off = USize(0, kMaxOffset);
    switch (Uniform(0, 5)) {
      case 0:
        off -= off % kPage;
        break;
      case 1:
        off = off - off % kPage + (off >= kPage ? kPage - 1 : 0);
        break;
      case 2:
        off = 512 * 1024 - USize(0, 2) * kPage + USize(0, 2);
        break;  // the group edge
      default:
        break;
    }
    return off;
  }

  std::string AnyName() {
    auto it = names_.begin();
    std::advance(it, Uniform(0, static_cast<int>(names_.size()) - 1));
    return it->first;
  }
  std::string RandomName() {
    return kNames[static_cast<size_t>(Uniform(0, static_cast<int>(kNames.size()) - 1))];
  }
  int LinkCount(const Inode* inode) const {
    int n = 0;
    for (const auto& [name, i] : names_) n += i.get() == inode;
    return n;
  }

  // The handle on `name`'s inode, opened if it has none.
  int Fd(const std::string& name) {
    Inode& inode = *names_.at(name);
    if (inode.fd < 0) {
      inode.fd = ::open(v_.P(name).c_str(), O_RDWR | O_CLOEXEC);
      INFO("open " << name << ": " << std::strerror(errno));
      REQUIRE(inode.fd >= 0);
    }
    return inode.fd;
  }

  // The mount agrees with the model on `name` in [off, off+len) and on the size.
  void Check(const std::string& name, size_t off, size_t len) {
    Inode& inode = *names_.at(name);
    const int fd = Fd(name);
    struct stat st;
    REQUIRE(::fstat(fd, &st) == 0);
    CHECK(static_cast<size_t>(st.st_size) == inode.data.size());
    const size_t end = std::min(inode.data.size(), off + len);
    const std::string want = off < end ? inode.data.substr(off, end - off) : std::string();
    // A range reaching the end reads one byte more: nothing may be there.
    const std::string got = PreadAll(fd, off, off + len >= inode.data.size() ? len + 1 : len);
    INFO(name << " [" << off << ", +" << len << "): " << FirstDiff(got, want));
    const bool same = got == want;  // (not REQUIRE(got == want): Catch would print both)
    REQUIRE(same);
  }

  // Drops `name` from the model; closes the inode's handle when it was the last name (kmsfs then
  // removes an unopened file, like any local file system).
  void DropName(const std::string& name) {
    auto inode = names_.at(name);
    names_.erase(name);
    if (LinkCount(inode.get()) == 0 && inode->fd >= 0) {
      REQUIRE(::close(inode->fd) == 0);
      inode->fd = -1;
    }
  }

  std::string Create() {
    const std::string name = RandomName();
    if (names_.count(name) != 0) return Write();
    // Create runs before the name leaves the model.
    const int fd = ::open(v_.P(name).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    INFO("create " << name << ": " << std::strerror(errno));
    REQUIRE(fd >= 0);
    auto inode = std::make_shared<Inode>();
    inode->fd = fd;
    names_[name] = inode;
    Check(name, 0, 16);
    return "create " + name;
  }

  std::string Write() {
    if (names_.empty()) return Create();
    const std::string name = AnyName();
    const size_t off = Offset();
    const size_t len = USize(1, Uniform(0, 3) == 0 ? kMaxWrite : 2 * kPage);
    const std::string data = Bytes(len);
    PwriteAll(Fd(name), data, off);
    std::string& m = names_.at(name)->data;
    if (m.size() < off + len) m.resize(off + len, '\0');
    m.replace(off, len, data);
    // Compare a margin around the write, so damage to neighbouring bytes shows too.
    const size_t from = off >= kPage ? off - kPage : 0;
    Check(name, from, off - from + len + kPage);
    return "pwrite " + name + " off " + std::to_string(off) + " len " + std::to_string(len);
  }

  std::string Truncate() {
    if (names_.empty()) return Create();
    const std::string name = AnyName();
    std::string& m = names_.at(name)->data;
    size_t size = 0;
    switch (Uniform(0, 3)) {
      case 0:
        size = m.size() / 2;
        break;  // down
      case 1:
        size = m.size() + USize(1, 3 * kPage);
        break;  // up, a hole or two
      case 2:
        size = Offset();
        break;  // anywhere
      default:
        size = m.size() - m.size() % kPage;
        break;  // to a block boundary
    }
    REQUIRE(::ftruncate(Fd(name), static_cast<off_t>(size)) == 0);
    const size_t old = m.size();
    m.resize(size, '\0');
    const size_t lo = std::min(old, size);
    const size_t from = lo >= 2 * kPage ? lo - 2 * kPage : 0;
    Check(name, from, 4 * kPage + (size > lo ? size - lo : 0));
    return "ftruncate " + name + " " + std::to_string(old) + " -> " + std::to_string(size);
  }

  std::string Reopen() {
    if (names_.empty()) return Create();
    const std::string name = AnyName();
    Inode& inode = *names_.at(name);
    if (inode.fd >= 0) REQUIRE(::close(inode.fd) == 0);
    inode.fd = -1;
    const size_t off = inode.data.empty() ? 0 : USize(0, inode.data.size() - 1);
    Check(name, off, USize(1, 3 * kPage));  // opens a fresh handle: keyd unwraps the DEK again
    return "reopen " + name;
  }

  std::string Rename() {
    if (names_.empty()) return Create();
    const std::string from = AnyName();
    const std::string to = RandomName();
    if (from == to) return "rename (skipped: same name)";
    auto src = names_.at(from);
    auto dst = names_.count(to) ? names_.at(to) : nullptr;
    if (dst == src) {
      // POSIX: two links of one file; rename does nothing and both names stay.
      REQUIRE(::rename(v_.P(from).c_str(), v_.P(to).c_str()) == 0);
      REQUIRE(::access(v_.P(from).c_str(), F_OK) == 0);
      return "rename " + from + " -> " + to + " (same inode: no-op)";
    }
    if (dst != nullptr) DropName(to);  // replaced: its handle closes first if it was the last name
    INFO("rename " << from << " -> " << to);
    REQUIRE(::rename(v_.P(from).c_str(), v_.P(to).c_str()) == 0);
    names_.erase(from);
    names_[to] = src;
    struct stat st;
    CHECK(ErrnoOf(::stat(v_.P(from).c_str(), &st)) == ENOENT);
    Check(to, 0, 3 * kPage);
    return "rename " + from + " -> " + to + (dst ? " (replacing)" : "");
  }

  std::string Link() {
    if (names_.empty()) return Create();
    const std::string from = AnyName();
    const std::string to = RandomName();
    if (names_.count(to) != 0) {
      CHECK(ErrnoOf(::link(v_.P(from).c_str(), v_.P(to).c_str())) == EEXIST);
      return "link " + from + " -> existing " + to + " (EEXIST)";
    }
    INFO("link " << from << " -> " << to);
    REQUIRE(::link(v_.P(from).c_str(), v_.P(to).c_str()) == 0);
    names_[to] = names_.at(from);
    struct stat a, b;
    REQUIRE(::stat(v_.P(from).c_str(), &a) == 0);
    REQUIRE(::stat(v_.P(to).c_str(), &b) == 0);
    CHECK(a.st_ino == b.st_ino);
    CHECK(b.st_nlink == static_cast<nlink_t>(LinkCount(names_.at(to).get())));
    // The new name reads the same contents through a handle of its own.
    const std::string got = ReadFile(v_.P(to));
    INFO(FirstDiff(got, names_.at(to)->data));
    const bool same = got == names_.at(to)->data;
    REQUIRE(same);
    return "link " + from + " -> " + to;
  }

  std::string Unlink() {
    if (names_.size() < 2) return Create();  // keep something to work on
    const std::string name = AnyName();
    auto inode = names_.at(name);
    DropName(name);
    REQUIRE(::unlink(v_.P(name).c_str()) == 0);
    struct stat st;
    CHECK(ErrnoOf(::stat(v_.P(name).c_str(), &st)) == ENOENT);
    // A remaining link still reads the contents.
    for (const auto& [other, i] : names_) {
      if (i == inode) {
        Check(other, 0, 2 * kPage);
        break;
      }
    }
    return "unlink " + name;
  }

  // MAP_SHARED write of a range inside the file (mmap cannot extend it), then msync.
  std::string MmapWrite() {
    if (names_.empty()) return Create();
    const std::string name = AnyName();
    std::string& m = names_.at(name)->data;
    if (m.empty()) return Write();
    const size_t off = USize(0, m.size() - 1);
    const size_t len = USize(1, std::min<size_t>(m.size() - off, 3 * kPage));
    const size_t map_off = off - off % kPage;
    const size_t map_len = off + len - map_off;
    const int fd = Fd(name);
    void* p = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                     static_cast<off_t>(map_off));
    INFO("mmap " << name << ": " << std::strerror(errno));
    REQUIRE(p != MAP_FAILED);
    char* base = static_cast<char*>(p);
    // What the mapping shows before the write is the model's contents too.
    const std::string before(base + (off - map_off), len);
    const bool same = before == m.substr(off, len);
    const std::string data = Bytes(len);
    std::memcpy(base + (off - map_off), data.data(), len);
    const int synced = ::msync(p, map_len, MS_SYNC);
    const int sync_err = errno;
    ::munmap(p, map_len);
    INFO("msync: " << std::strerror(sync_err));
    REQUIRE(synced == 0);
    CHECK(same);
    m.replace(off, len, data);
    const size_t from = off >= kPage ? off - kPage : 0;
    Check(name, from, off - from + len + kPage);
    return "mmap write " + name + " off " + std::to_string(off) + " len " + std::to_string(len);
  }

  MountedVolume& v_;
  std::mt19937_64 rng_;
  std::map<std::string, std::shared_ptr<Inode>> names_;
};

TEST_CASE("random operations on the mount agree with an in-memory model", "[fs][model]") {
  const uint64_t seed = SeedFromEnv();
  const int ops = OpsFromEnv();
  INFO("model seed " << seed << " (replay: KMSFS_MODEL_SEED=" << seed << " KMSFS_MODEL_OPS=" << ops
                     << ")");
  MountedVolume v;
  REQUIRE(::mkdir(v.P("d0").c_str(), 0755) == 0);
  REQUIRE(::mkdir(v.P("d1").c_str(), 0755) == 0);
  std::vector<std::string> recent;  // the last operations, shown with a failure
  {
    Model model(v, seed);
    const int remount_every = std::max(1, ops / (kRemounts + 1));
    for (int step = 1; step <= ops; ++step) {
      std::ostringstream history;
      for (const auto& r : recent) history << "\n  " << r;
      INFO("step " << step << " of " << ops << "; the operations before it:" << history.str());
      const std::string op = model.Step(step);
      recent.push_back(std::to_string(step) + ": " + op);
      if (recent.size() > 12) recent.erase(recent.begin());
      if (step % kFullCompareEvery == 0) model.FullCompare();
      if (step % remount_every == 0 && step < ops) {
        model.CloseAll();
        v.Remount();
        model.FullCompare();  // now from the backing files, not the kernel's page cache
      }
    }
    model.CloseAll();
    v.Remount();
    model.FullCompare();
  }
  CHECK(v.mount->Unmount());
  CheckLog(v.mount->Log());
}

}  // namespace
}  // namespace kmsfs::it
