// Full disks (issue 7, docs/reliability.md §4), against a real keyd and a real kmsfs mount:
//   - the backing store on a small tmpfs made by the test fills up: writes, appends, creates and
//     sparse extensions fail with ENOSPC, every acknowledged byte stays readable and exact (no
//     file is left half-extended or unreadable), and once space is freed the same mount works
//     again, without remounting;
//   - keyd's state directory fills up: keyd fails closed (it cannot write the audit record), so
//     opens and creates through the mount fail cleanly — no entry is left behind, kmsfs and keyd
//     keep running, nothing on disk changes — and work again once space is freed.
// The keyd-level view of a full audit trail is tests/integration/keyd_policy_audit_test.cc.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>

#include "common/base/unique_fd.h"
#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

// A tmpfs mounted for the test and lazily unmounted however the test ends. Declare it before
// anything that lives on it.
class Tmpfs {
 public:
  Tmpfs(const std::string& dir, const std::string& size) : dir_(dir) {
    REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + size + ",mode=0755").c_str()) != 0) {
      const int e = errno;
      Skip("cannot mount a tmpfs (" + std::string(std::strerror(e)) + ")");
    }
    mounted_ = true;
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;

 private:
  std::string dir_;
  bool mounted_ = false;
};

std::string Pattern(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

void WriteSynced(const std::string& path, const std::string& data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  REQUIRE(fd.valid());
  REQUIRE(::write(fd.get(), data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  REQUIRE(::fsync(fd.get()) == 0);
  REQUIRE(::close(fd.Release()) == 0);
}

// Writes `data` with write(2) in one call per chunk; returns how many bytes were acknowledged
// and the errno that stopped it (0 if everything went in).
std::pair<size_t, int> WriteUntilFull(int fd, const std::string& chunk, size_t max_total) {
  size_t done = 0;
  while (done < max_total) {
    const ssize_t n = ::write(fd, chunk.data(), chunk.size());
    if (n < 0) return {done, errno};
    done += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < chunk.size()) {
      // A short write: the next one reports why.
      const ssize_t m = ::write(fd, chunk.data(), 1);
      if (m < 0) return {done, errno};
      done += static_cast<size_t>(m);
    }
  }
  return {done, 0};
}

TEST_CASE("a full backing store fails writes with ENOSPC, loses nothing, and recovers",
          "[enospc]") {
  RequireFuse();
  if (::geteuid() != 0) Skip("needs root (tmpfs mounts)");
  Sandbox box;
  Tmpfs small(box.Path("small"), "3m");
  auto keyd = box.StartKeyd();
  const std::string key = CreateKey(box);
  const std::string cipherdir = box.Path("small/cipher");
  InitVolume(box, key, cipherdir);
  auto mount = std::make_unique<Mount>(box, cipherdir, box.Path("mnt"));
  auto P = [&](const std::string& rel) { return mount->Path(rel); };

  std::map<std::string, std::string> model = {
      {"keep1", Pattern(100'000, 1)}, {"keep2", Pattern(5'000, 2)}, {"keep3", Pattern(8'192, 3)}};
  for (const auto& [name, data] : model) WriteSynced(P(name), data);

  // Fill the store through the mount.
  {
    UniqueFd big(::open(P("big").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    REQUIRE(big.valid());
    auto [written, err] = WriteUntilFull(big.get(), Pattern(65536, 4), 16u << 20);
    INFO("big: " << written << " bytes, then " << std::strerror(err));
    CHECK(err == ENOSPC);
    CHECK(written > 0);
    ::fsync(big.get());  // may fail with ENOSPC too; what counts is what reads back
  }

  // While full: more data fails with ENOSPC, and fails cleanly.
  {
    UniqueFd fd(::open(P("keep2").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    REQUIRE(fd.valid());
    const std::string chunk = Pattern(3000, 5);
    auto [appended, err] = WriteUntilFull(fd.get(), chunk, 1u << 20);
    INFO("keep2 append: " << appended << " bytes, then " << std::strerror(err));
    CHECK(err == ENOSPC);
    for (size_t i = 0; i < appended; ++i) model["keep2"].push_back(chunk[i % chunk.size()]);
    (void)::fsync(fd.get());
  }
  {
    // In place: the block and its metadata entry already exist, so this may well succeed.
    UniqueFd fd(::open(P("keep1").c_str(), O_WRONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    const std::string patch = Pattern(4096, 6);
    const ssize_t n = ::pwrite(fd.get(), patch.data(), patch.size(), 8192);
    if (n > 0) model["keep1"].replace(8192, static_cast<size_t>(n), patch.substr(0, n));
    if (n < 0) CHECK(errno == ENOSPC);
  }
  {
    // A sparse extension needs new metadata pages.
    const int rc = ::truncate(P("keep3").c_str(), 5 << 20);
    if (rc == 0) {
      model["keep3"].resize(5 << 20, '\0');
    } else {
      CHECK(errno == ENOSPC);
    }
  }
  int create_errno = 0;
  {
    // A new file needs at least two backing pages: its header and its first metadata page.
    const int fd = ::open(P("new").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      create_errno = errno;
      CHECK(create_errno == ENOSPC);
    } else {
      ::close(fd);
      model["new"] = "";
    }
  }
  // Everything acknowledged reads back exactly, on the same (still full) mount.
  CHECK(mount->running());
  for (const auto& [name, data] : model) {
    INFO(name);
    CHECK(ReadFile(P(name)) == data);
  }
  if (create_errno != 0) {
    INFO("a failed create must not leave an entry");
    CHECK(ErrnoOf(::access(P("new").c_str(), F_OK)) == ENOENT);
  }
  // "big" holds what was written before the disk filled, as far as it is readable at all: no
  // bytes it never had.
  {
    UniqueFd fd(::open(P("big").c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    const std::string chunk = Pattern(65536, 4);
    std::string buf(65536, '\0');
    for (off_t off = 0;; off += 65536) {
      const ssize_t n = ::pread(fd.get(), buf.data(), buf.size(), off);
      if (n <= 0) {
        if (n < 0) CHECK(errno == EIO);  // only the block cut by ENOSPC may be unreadable
        break;
      }
      CHECK(buf.compare(0, static_cast<size_t>(n), chunk, 0, static_cast<size_t>(n)) == 0);
    }
  }

  // Free the space: the same mount works again.
  REQUIRE(::unlink(P("big").c_str()) == 0);
  const std::string after = Pattern(300'000, 7);
  WriteSynced(P("after"), after);
  model["after"] = after;
  {
    UniqueFd fd(::open(P("keep2").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    REQUIRE(fd.valid());
    const std::string more = Pattern(7000, 8);
    REQUIRE(::write(fd.get(), more.data(), more.size()) == static_cast<ssize_t>(more.size()));
    REQUIRE(::fsync(fd.get()) == 0);
    model["keep2"] += more;
  }
  for (const auto& [name, data] : model) {
    INFO(name);
    CHECK(ReadFile(P(name)) == data);
  }
  // And what is on disk is right, not only what a cache holds.
  REQUIRE(mount->Unmount());
  mount = std::make_unique<Mount>(box, cipherdir, box.Path("mnt"));
  for (const auto& [name, data] : model) {
    INFO(name << " after remount");
    CHECK(ReadFile(P(name)) == data);
  }
  CHECK(mount->Unmount());
  CheckLog(mount->Log(), {"No space left", "ENOSPC", "space"}, {box.root_key_hex()});
}

TEST_CASE("a full keyd state dir fails opens and creates cleanly, and they work after",
          "[enospc][fail-closed]") {
  RequireFuse();
  if (::geteuid() != 0) Skip("needs root (tmpfs mounts)");
  Sandbox box;
  Tmpfs tiny(box.Path("tiny"), "16m");  // room for keyd's preallocated 8 MiB audit.wal
  const std::string state = box.Path("tiny/state");
  auto keyd = std::make_unique<Keyd>(box.root(), 70, state, box.socket_path(), box.root_key_file(),
                                     Keyd::Options{});
  REQUIRE(keyd->running());
  const std::string key = CreateKey(box);
  const std::string cipherdir = box.Path("cipher");
  InitVolume(box, key, cipherdir);
  Mount mount(box, cipherdir, box.Path("mnt"));
  const std::string a = Pattern(20'000, 11);
  WriteSynced(mount.Path("a"), a);

  // Fill keyd's filesystem. LMDB may still reuse a few freed pages, and audit records keep going
  // to keyd's preallocated write-ahead file until its next ingest fails (every 256 records): try
  // opens until one is refused.
  (void)Run({"dd", "if=/dev/zero", "of=" + box.Path("tiny/filler"), "bs=64k"});
  int refused = 0;
  for (int i = 0; i < 500 && refused == 0; ++i) {
    const int fd = ::open(mount.Path("a").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      refused = errno;
    else
      ::close(fd);
  }
  INFO("open with keyd's disk full: " << std::strerror(refused));
  CHECK(refused != 0);
  CHECK((refused == EIO || refused == EACCES || refused == ENOKEY));
  // A create cannot get a data key either, and leaves nothing behind.
  const int fd = ::open(mount.Path("b").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  const int create_errno = fd < 0 ? errno : 0;
  if (fd >= 0) ::close(fd);
  CHECK(create_errno != 0);
  CHECK(ErrnoOf(::access(mount.Path("b").c_str(), F_OK)) == ENOENT);
  // Metadata needs no key; both daemons are alive.
  struct stat st;
  CHECK(::stat(mount.Path("a").c_str(), &st) == 0);
  CHECK(st.st_size == static_cast<off_t>(a.size()));
  CHECK(mount.running());
  CHECK(keyd->running());

  // Space again: the same mount opens and creates, and the data is intact.
  REQUIRE(::unlink(box.Path("tiny/filler").c_str()) == 0);
  CHECK(ReadFile(mount.Path("a")) == a);
  WriteSynced(mount.Path("b"), "created after");
  CHECK(ReadFile(mount.Path("b")) == "created after");
  auto verify = box.Ctl({"audit", "verify"});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
  CHECK(mount.Unmount());
  CHECK(keyd->Stop() == std::optional<int>(0));
}

}  // namespace
}  // namespace kmsfs::it
