// Integration: a real kmsfs mount over a real keyd — contents and names round-trip across
// remounts, the backing directory holds no plaintext, and mounts always end cleanly.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

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
  REQUIRE(::setxattr(v.P(dir).c_str(), "user.note", xattr_value.data(), xattr_value.size(),
                     0) == 0);

  const std::vector<std::string> needles = {contents.substr(0, 20), name, dir, target,
                                            xattr_value, long_name, "LongPlaintextName",
                                            "secret-plan", "eagle has landed"};
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
