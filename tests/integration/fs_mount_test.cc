// Integration: a real kmsfs mount over a real keyd — contents and names round-trip across
// remounts, the backing directory holds no plaintext, and mounts always end cleanly.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

std::string Pattern(size_t size, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(size, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

constexpr uint64_t kGiB = uint64_t{1} << 30;

TEST_CASE("contents round-trip across remounts for edge sizes", "[fs][mount]") {
  MountedVolume v;
  const std::vector<size_t> sizes = {0, 1, 4095, 4096, 4097, (size_t{1} << 20) + 1};
  for (size_t size : sizes) {
    WriteFile(v.P("f" + std::to_string(size)), Pattern(size, static_cast<uint32_t>(size)));
  }
  for (int round = 0; round < 2; ++round) {
    for (size_t size : sizes) {
      const std::string path = v.P("f" + std::to_string(size));
      struct stat st;
      REQUIRE(::stat(path.c_str(), &st) == 0);
      CHECK(static_cast<size_t>(st.st_size) == size);
      CHECK(ReadFile(path) == Pattern(size, static_cast<uint32_t>(size)));
    }
    v.Remount();
  }
  CHECK(v.mount->Unmount());
  CheckLog(v.mount->Log());
}

TEST_CASE("a sparse 5 GiB file stays sparse in the backing directory", "[fs][mount]") {
  MountedVolume v;
  const std::string path = v.P("sparse");
  {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, "Z", 1, static_cast<off_t>(5 * kGiB - 1)) == 1);
    REQUIRE(::close(fd) == 0);
  }
  v.Remount();
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_size) == 5 * kGiB);
  const int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  char c = 0;
  CHECK(::pread(fd, &c, 1, static_cast<off_t>(5 * kGiB - 1)) == 1);
  CHECK(c == 'Z');
  char zeros[4096];
  CHECK(::pread(fd, zeros, sizeof zeros, static_cast<off_t>(3 * kGiB)) == sizeof zeros);
  CHECK(std::string(zeros, sizeof zeros) == std::string(sizeof zeros, '\0'));
  ::close(fd);
  // The backing file: one metadata page per 512 KiB of holes (10240 pages = 40 MiB) and one
  // data page; nowhere near 5 GiB.
  uint64_t backing_blocks = 0;
  for (const auto& e : std::filesystem::directory_iterator(v.cipherdir)) {
    struct stat bst;
    REQUIRE(::lstat(e.path().c_str(), &bst) == 0);
    if (S_ISREG(bst.st_mode) && bst.st_size > static_cast<off_t>(kGiB)) {
      backing_blocks = static_cast<uint64_t>(bst.st_blocks);
    }
  }
  INFO("backing st_blocks " << backing_blocks);
  CHECK(backing_blocks > 0);
  CHECK(backing_blocks * 512 < 64 * (uint64_t{1} << 20));
  CHECK(v.mount->Unmount());
}

TEST_CASE("the backing directory holds no plaintext contents or names", "[fs][mount]") {
  MountedVolume v;
  const std::string contents = "attack at dawn: the eagle has landed 0123456789";
  const std::string name = "secret-plan-alpha.txt";
  const std::string dir = "classified-directory";
  const std::string target = "symlink-target-somewhere-secret";
  const std::string xattr_value = "xattr-value-nobody-may-see";
  const std::string long_name = "LongPlaintextName-" + std::string(255 - 18, 'q');
  REQUIRE(long_name.size() == 255);

  REQUIRE(::mkdir(v.P(dir).c_str(), 0755) == 0);
  WriteFile(v.P(dir + "/" + name), contents);
  WriteFile(v.P(long_name), contents + contents);
  WriteFile(v.P(dir + "/big"), std::string(100000, 'x') + contents + std::string(5000, 'y'));
  REQUIRE(::symlink(target.c_str(), v.P("link-" + name).c_str()) == 0);
  REQUIRE(::setxattr(v.P(dir + "/" + name).c_str(), "user.note", xattr_value.data(),
                     xattr_value.size(), 0) == 0);
  REQUIRE(::setxattr(v.P(dir).c_str(), "user.note", xattr_value.data(), xattr_value.size(), 0) ==
          0);

  const std::vector<std::string> needles = {contents.substr(0, 20),
                                            name,
                                            dir,
                                            target,
                                            xattr_value,
                                            long_name,
                                            "LongPlaintextName",
                                            "secret-plan",
                                            "eagle has landed"};
  auto check_backing = [&] {
    const auto found = TreeContains(v.cipherdir, needles);
    for (const auto& f : found) FAIL_CHECK("plaintext in the backing directory: " << f);
    CHECK(found.empty());
  };
  check_backing();
  v.Remount();
  CHECK(ReadFile(v.P(dir + "/" + name)) == contents);
  CHECK(ReadFile(v.P(long_name)) == contents + contents);
  char buf[256];
  const ssize_t n = ::readlink(v.P("link-" + name).c_str(), buf, sizeof buf);
  REQUIRE(n > 0);
  CHECK(std::string(buf, static_cast<size_t>(n)) == target);
  const ssize_t xn = ::getxattr(v.P(dir + "/" + name).c_str(), "user.note", buf, sizeof buf);
  REQUIRE(xn > 0);
  CHECK(std::string(buf, static_cast<size_t>(xn)) == xattr_value);
  CHECK(v.mount->Unmount());
  check_backing();
  CheckLog(v.mount->Log());
}

TEST_CASE("unmount is clean: fusermount3 -u and SIGTERM both end kmsfs with 0", "[fs][mount]") {
  MountedVolume v;
  WriteFile(v.P("a"), "a");
  SECTION("fusermount3 -u") {
    CHECK(v.mount->Unmount());
    CHECK(v.mount->exit_code() == 0);
  }
  SECTION("SIGTERM unmounts by itself") {
    ::kill(v.mount->pid(), SIGTERM);
    for (int i = 0; i < 100 && IsMounted(v.mount->mountpoint()); ++i) ::usleep(50'000);
    CHECK_FALSE(IsMounted(v.mount->mountpoint()));
    CHECK(v.mount->Unmount());
    CHECK(v.mount->exit_code() == 0);
  }
  CHECK_FALSE(IsMounted(v.mount->mountpoint()));
  // And the volume is intact afterwards.
  v.mount.reset();
  Mount again(v.box, v.cipherdir, v.mountpoint);
  CHECK(ReadFile(again.Path("a")) == "a");
  CHECK(again.Unmount());
}

// The one non-reserved entry of a backing directory (tests that hold a single file).
std::string OnlyBackingEntry(const std::string& dir) {
  std::string found;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.starts_with("kmsfs.")) continue;
    REQUIRE(found.empty());
    found = e.path().string();
  }
  REQUIRE_FALSE(found.empty());
  return found;
}

size_t CountLines(const std::string& log, const std::string& needle) {
  size_t n = 0;
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) n += line.find(needle) != std::string::npos;
  return n;
}

TEST_CASE("tampering is EIO with one warn line naming the inode and block, never a name",
          "[fs][mount][tamper]") {
  MountedVolume v;
  const std::string name = "tamper-victim-name";
  WriteFile(v.P(name), std::string(3 * 4096, 'p'));
  const std::string backing = OnlyBackingEntry(v.cipherdir);
  struct stat bst;
  REQUIRE(::stat(backing.c_str(), &bst) == 0);
  v.Remount();  // no kernel page cache of the old plaintext
  {
    // Flip one byte in block 1's data page (header page + metadata page + block 0 = 12288).
    const int fd = ::open(backing.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    char c;
    REQUIRE(::pread(fd, &c, 1, 12288 + 7) == 1);
    c ^= 0x40;
    REQUIRE(::pwrite(fd, &c, 1, 12288 + 7) == 1);
    ::close(fd);
  }
  // O_DIRECT: exactly one read request reaches kmsfs, so exactly one line.
  const int fd = ::open(v.P(name).c_str(), O_RDONLY | O_DIRECT);
  REQUIRE(fd >= 0);
  char buf[4096];
  CHECK(::pread(fd, buf, sizeof buf, 0) == 4096);  // block 0 is intact
  errno = 0;
  CHECK(::pread(fd, buf, sizeof buf, 4096) == -1);
  CHECK(errno == EIO);
  ::close(fd);
  CHECK(v.mount->Unmount());
  const std::string log = v.mount->Log();
  INFO(log);
  CHECK(CountLines(log, "failed authentication") == 1);
  CHECK(CountLines(log, "inode " + std::to_string(bst.st_ino)) == 1);
  CHECK(CountLines(log, "block 1") == 1);
  CHECK(log.find(name) == std::string::npos);
  CHECK(log.find("pppp") == std::string::npos);
}

TEST_CASE("an impossible backing size is EIO on stat, the entry can still be removed",
          "[fs][mount][tamper]") {
  MountedVolume v;
  WriteFile(v.P("cut"), std::string(10000, 'c'));
  const std::string backing = OnlyBackingEntry(v.cipherdir);
  v.Remount();
  REQUIRE(::truncate(backing.c_str(), 5000) == 0);  // inside the first metadata page
  struct stat st;
  CHECK(ErrnoOf(::stat(v.P("cut").c_str(), &st)) == EIO);
  CHECK(ErrnoOf(::open(v.P("cut").c_str(), O_RDONLY)) == EIO);
  CHECK(::unlink(v.P("cut").c_str()) == 0);
  CHECK(v.mount->Unmount());
  CHECK(CountLines(v.mount->Log(), "failed authentication") >= 1);
}

TEST_CASE("names that do not decrypt are skipped by readdir, with a warn line",
          "[fs][mount][tamper]") {
  MountedVolume v;
  WriteFile(v.P("good"), "g");
  // A well-formed backing name whose SIV tag is wrong: an entry written without the key.
  WriteFile(v.cipherdir + "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "junk");
  v.Remount();
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(v.mountpoint)) {
    names.push_back(e.path().filename().string());
  }
  CHECK(names == std::vector<std::string>{"good"});
  CHECK(ReadFile(v.P("good")) == "g");
  CHECK(v.mount->Unmount());
  CHECK(CountLines(v.mount->Log(), "does not decrypt") >= 1);
}

TEST_CASE("kmsfs info shows the volume without keys", "[fs][cli]") {
  RequireFuse();
  Sandbox box;
  auto keyd = box.StartKeyd();
  const std::string key = CreateKey(box);
  const std::string id = InitVolume(box, key, box.Path("cipher"));
  keyd.reset();  // info needs no keyd
  auto r = Run({KmsfsBinary(), "info", box.Path("cipher")});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find(id) != std::string::npos);
  CHECK(r.out.find(key) != std::string::npos);
  CHECK(r.out.find("Verified:  no") != std::string::npos);
  auto missing = Run({KmsfsBinary(), "info", box.Path("nothing-here")});
  CHECK(missing.exit_code != 0);
}

}  // namespace
}  // namespace kmsfs::it

namespace kmsfs::it {
namespace {

// The session loop answers short requests on its reader thread; one that turns out slow must
// not hold up the rest of the mount (fs/fuse/session_loop.h: the watchdog's relief reader).
TEST_CASE("a slow small write does not hold up other requests on the mount", "[fs][mount][loop]") {
  MountedVolume v;
  WriteFile(v.P("other"), "still here");
  // In its own directory: a lookup or listing that reaches the file being written waits for
  // its size (FileContent's lock) while the write runs, and the kernel holds the directory
  // meanwhile — what this test is about is the other directories.
  REQUIRE(::mkdir(v.P("slow").c_str(), 0755) == 0);
  WriteFile(v.P("slow/sparse"), "");
  // One byte 64 GiB past the end: a 1-byte WRITE (answered inline), which seals every block of
  // the 64 GiB hole first — seconds of work in the daemon.
  std::atomic<bool> done{false};
  std::atomic<ssize_t> written{-1};  // Catch2's assertions are for the main thread only
  std::thread slow([&] {
    const int fd = ::open(v.P("slow/sparse").c_str(), O_WRONLY);
    if (fd >= 0) {
      written = ::pwrite(fd, "x", 1, off_t{64} << 30);
      ::close(fd);
    }
    done = true;
  });
  // Wait until the daemon is in it: the backing file grows as the hole's blocks are sealed.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool growing = false;
  while (!growing && !done && std::chrono::steady_clock::now() < deadline) {
    for (const auto& e : std::filesystem::recursive_directory_iterator(v.cipherdir)) {
      std::error_code ec;
      if (e.is_regular_file(ec) && e.file_size(ec) > (uint64_t{8} << 20)) growing = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling the backing store
  }
  REQUIRE(growing);
  // Meanwhile, other files are looked up, read and written, and a directory is listed.
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    CHECK(ReadFile(v.P("other")) == "still here");
    WriteFile(v.P("new" + std::to_string(i)), "n");
    struct stat st;
    CHECK(::stat(v.P("new" + std::to_string(i)).c_str(), &st) == 0);
  }
  size_t listed = 0;
  for (const auto& e : std::filesystem::directory_iterator(v.mountpoint)) listed += !e.path().empty();
  CHECK(listed == 22);  // other, slow, new0..new19
  const bool slow_still_running = !done;
  const auto took = std::chrono::steady_clock::now() - started;
  slow.join();
  CHECK(written == 1);
  INFO("the other requests took "
       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  // They finished while the slow write was still being served (they did not wait for it).
  CHECK(slow_still_running);
  struct stat st;
  REQUIRE(::stat(v.P("slow/sparse").c_str(), &st) == 0);
  CHECK(st.st_size == (off_t{64} << 30) + 1);
  CHECK(v.mount->Unmount());
}

}  // namespace
}  // namespace kmsfs::it
