// fs/lifecycle: the header rewrite of rewrap (only the first sector changes), RewrapFiles over
// real temp files with a fake WrapService (resume, idempotence, failures per file), the version
// scan, and the progress line.
#include "fs/lifecycle/rewrap.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "common/format/file_header.h"
#include "common/format/wrapped_blob.h"
#include "fs/lifecycle/progress.h"
#include "fs/lifecycle/volume_scan.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs::lifecycle {
namespace {

namespace stdfs = std::filesystem;

Bytes Blob(const std::string& key_id, uint32_t version, uint8_t fill) {
  format::WrappedBlob b;
  b.key_id = key_id;
  b.key_version = version;
  b.salt.fill(fill);
  b.nonce.fill(static_cast<uint8_t>(fill + 1));
  b.ciphertext.assign(32, static_cast<uint8_t>(fill + 2));
  b.tag.fill(static_cast<uint8_t>(fill + 3));
  return format::SerializeWrappedBlob(b).value();
}

Bytes Page(uint8_t seed, const std::string& key_id, uint32_t version) {
  format::FileHeader h;
  h.file_id = testing::IdFromSeed(seed);
  h.wrapped_dek = Blob(key_id, version, seed);
  return format::SerializeFileHeader(h).value();
}

// Rewraps to `current` (same key), or fails for blobs whose salt byte is `fail_fill`. Counts calls.
class FakeWrap final : public WrapService {
 public:
  FakeWrap(uint32_t current, std::atomic<int>* calls, int fail_fill = -1)
      : current_(current), calls_(calls), fail_fill_(fail_fill) {}
  Result<Rewrapped> ReEncrypt(ByteSpan blob, const format::EncryptionContext& ctx,
                              const std::string& key_id) override {
    ++*calls_;
    auto parsed = format::ParseWrappedBlob(blob);
    if (!parsed.ok()) return parsed.error();
    if (ctx.count("kmsfs:file") != 1 || ctx.count("kmsfs:volume") != 1) {
      return Error(Code::kInvalidArgument, "no file context");
    }
    if (parsed->salt[0] == fail_fill_) return Error(Code::kCorrupt, "InvalidCiphertextException");
    return Rewrapped{Blob(key_id, current_, static_cast<uint8_t>(parsed->salt[0] + 100)), current_};
  }

 private:
  uint32_t current_;
  std::atomic<int>* calls_;
  int fail_fill_;
};

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/kmsfs-lc-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { stdfs::remove_all(path); }
  std::string path;
};

void WriteBacking(const std::string& path, const Bytes& page) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(page.data()), static_cast<std::streamsize>(page.size()));
  const std::string body(4096, 'x');  // stands for the metadata page; rewrap never reads it
  f.write(body.data(), static_cast<std::streamsize>(body.size()));
}

TEST_CASE("RewrapHeaderPage changes only the wrapped DEK inside the first sector", "[lifecycle]") {
  const Bytes old_page = Page(1, "key-a", 1);
  const Bytes blob = Blob("key-a", 4, 9);
  auto page = RewrapHeaderPage(old_page, blob);
  REQUIRE(page.ok());
  REQUIRE(page->size() == old_page.size());
  CHECK(std::equal(page->begin() + kAtomicPrefix, page->end(), old_page.begin() + kAtomicPrefix));
  auto parsed = format::ParseFileHeader(*page);
  REQUIRE(parsed.ok());
  CHECK(parsed->wrapped_dek == blob);
  CHECK(parsed->file_id == testing::IdFromSeed(1));

  SECTION("every DEK blob fits the first sector; anything else is refused") {
    const Bytes long_blob = Blob(std::string(64, 'k'), 2, 3);  // still < 512 with the prefix
    CHECK(RewrapHeaderPage(old_page, long_blob).ok());
    Bytes huge = Blob("key-a", 2, 3);
    format::WrappedBlob b = format::ParseWrappedBlob(huge).value();
    b.ciphertext.assign(600, 1);  // not a DEK: the header parse refuses it first
    auto r = RewrapHeaderPage(old_page, format::SerializeWrappedBlob(b).value());
    CHECK_FALSE(r.ok());
  }
  SECTION("a damaged page is not rewritten") {
    Bytes bad = old_page;
    bad[0] ^= 1;
    CHECK(RewrapHeaderPage(bad, blob).error().code() == Code::kCorrupt);
  }
}

TEST_CASE("RewrapFiles rewrites old headers and skips current ones and reports failures by path",
          "[lifecycle]") {
  TempDir dir;
  std::vector<BackingEntry> entries;
  for (uint8_t i = 1; i <= 12; ++i) {
    const std::string p = dir.path + "/f" + std::to_string(i);
    // Files 1..4 under v1, 5..8 under v2, 9..12 already under v3 (the current one).
    WriteBacking(p, Page(i, "key-a", i <= 4 ? 1 : i <= 8 ? 2 : 3));
    entries.push_back(BackingEntry{p, i == 6 ? "/plain/six" : ""});
  }
  const format::Id128 volume = testing::IdFromSeed(99);
  std::atomic<int> calls{0};
  std::mutex mu;
  uint64_t last_done = 0;
  RewrapOptions options;
  options.jobs = 3;
  options.on_progress = [&](uint64_t done, uint64_t total, uint64_t) {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(total == 12);
    CHECK(done == last_done + 1);
    last_done = done;
  };
  // File 6 (salt byte 6) fails in keyd: the others go on.
  RewrapResult r = RewrapFiles(
      entries, volume, [&] { return std::make_unique<FakeWrap>(3, &calls, 6); }, options);
  CHECK(r.files == 12);
  CHECK(r.rewrapped == 7);
  CHECK(r.current == 4);
  REQUIRE(r.failures.size() == 1);
  CHECK(r.failures[0].first == "/plain/six");
  CHECK(last_done == 12);
  for (uint8_t i = 1; i <= 12; ++i) {
    auto key = ReadHeaderKey(entries[i - 1].backing_path);
    REQUIRE(key.ok());
    CHECK(key->version == (i == 6 ? 2u : 3u));
    // The rest of the file is untouched.
    std::ifstream f(entries[i - 1].backing_path, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    CHECK(all.size() == 8192);
    CHECK(all.substr(4096) == std::string(4096, 'x'));
  }

  SECTION("a rerun finishes the rest and asks keyd only about files not yet current") {
    calls = 0;
    RewrapOptions rerun;
    rerun.jobs = 2;
    RewrapResult again = RewrapFiles(
        entries, volume, [&] { return std::make_unique<FakeWrap>(3, &calls); }, rerun);
    CHECK(again.rewrapped == 1);
    CHECK(again.current == 11);
    CHECK(again.failures.empty());
    // Besides file 6, each worker may ask once about a current file: the workers start together,
    // before any of them has learned the current version (CI saw 3 with the default 8 jobs).
    CHECK(calls <= 1 + 2);
  }
  SECTION("a dry run writes nothing") {
    RewrapOptions dry;
    dry.dry_run = true;
    RewrapResult d = RewrapFiles(
        entries, volume, [&] { return std::make_unique<FakeWrap>(4, &calls); }, dry);
    CHECK(d.rewrapped == 12);
    CHECK(ReadHeaderKey(entries[0].backing_path)->version == 3);
  }
}

TEST_CASE("ListBackingFiles lists header files once and skips reserved names", "[lifecycle]") {
  TempDir dir;
  stdfs::create_directories(dir.path + "/sub");
  WriteBacking(dir.path + "/AAAAAAAAAAAAAAAAAAAAAAAA", Page(1, "k", 1));
  WriteBacking(dir.path + "/sub/BBBBBBBBBBBBBBBBBBBBBBBB", Page(2, "k", 2));
  REQUIRE(::link((dir.path + "/sub/BBBBBBBBBBBBBBBBBBBBBBBB").c_str(),
                 (dir.path + "/CCCCCCCCCCCCCCCCCCCCCCCC").c_str()) == 0);
  std::ofstream(dir.path + "/kmsfs.dirid") << "0123456789abcdef";
  std::ofstream(dir.path + "/kmsfs.conf.rewrap.tmp") << "x";
  auto list = ListBackingFiles(dir.path, nullptr);
  REQUIRE(list.ok());
  CHECK(list->files.size() == 2);  // the hard link once, no reserved files
  for (const auto& e : list->files) CHECK(e.plain_path.empty());
  CHECK(list->unreadable.empty());
}

// The walk must never skip silently what it cannot read: retire-version trusts it to have seen
// every header. A 0700 directory of another user (the walk runs as nobody) and a mount point
// inside the tree are both listed as unreadable, with their backing paths.
TEST_CASE("ListBackingFiles lists a directory it cannot open and a mount point as unreadable",
          "[lifecycle]") {
  TempDir dir;
  REQUIRE(::chmod(dir.path.c_str(), 0755) == 0);
  const std::string locked = dir.path + "/DDDDDDDDDDDDDDDDDDDDDDDD";
  REQUIRE(::mkdir(locked.c_str(), 0700) == 0);
  WriteBacking(locked + "/EEEEEEEEEEEEEEEEEEEEEEEE", Page(3, "k", 1));
  WriteBacking(dir.path + "/AAAAAAAAAAAAAAAAAAAAAAAA", Page(1, "k", 2));
  REQUIRE(::chmod((dir.path + "/AAAAAAAAAAAAAAAAAAAAAAAA").c_str(), 0644) == 0);

  SECTION("a directory it cannot open") {
    // 0 = as expected; other values say which expectation failed (checked in the child, which
    // cannot use Catch).
    auto scan = [&]() -> int {
      auto list = ListBackingFiles(dir.path, nullptr);
      if (!list.ok()) return 2;
      if (list->files.size() != 1) return 3;
      if (list->unreadable.size() != 1) return 4;
      if (list->unreadable[0].first != locked) return 5;
      if (list->unreadable[0].second.find("Permission denied") == std::string::npos) return 6;
      return 0;
    };
    if (::geteuid() != 0) {
      REQUIRE(::chmod(locked.c_str(), 0) == 0);
      CHECK(scan() == 0);
      REQUIRE(::chmod(locked.c_str(), 0700) == 0);
    } else {
      const pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) {
          ::_exit(1);
        }
        ::_exit(scan());
      }
      int status = 0;
      REQUIRE(::waitpid(pid, &status, 0) == pid);
      REQUIRE(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
    }
  }
  SECTION("a mount point") {
    const std::string mnt = dir.path + "/MMMMMMMMMMMMMMMMMMMMMMMM";
    REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
    WriteBacking(mnt + "/FFFFFFFFFFFFFFFFFFFFFFFF", Page(4, "k", 1));  // hidden by the mount
    if (::mount("kmsfs-test", mnt.c_str(), "tmpfs", 0, "size=64k") != 0) {
      WARN("cannot mount a tmpfs here (" << std::strerror(errno) << "): mount point case skipped");
      return;
    }
    auto list = ListBackingFiles(dir.path, nullptr);
    ::umount2(mnt.c_str(), MNT_DETACH);
    REQUIRE(list.ok());
    CHECK(list->files.size() == 2);  // the top file and the one in the 0700 directory
    REQUIRE(list->unreadable.size() == 1);
    CHECK(list->unreadable[0].first == mnt);
    CHECK_THAT(list->unreadable[0].second, Catch::Contains("another file system"));
  }
}

TEST_CASE("Progress::Line shows count and rate and ETA", "[lifecycle]") {
  CHECK(Progress::Line(50, 200, 0, 10.0, "files") == "50/200 files  5.0 files/s  ETA 0:30");
  CHECK(Progress::Line(200, 200, 2, 4.0, "files") ==
        "200/200 files  50.0 files/s  ETA 0:00  (2 failed)");
  CHECK(Progress::Line(0, 10, 0, 0.0, "files") == "0/10 files  0.0 files/s  ETA ?");
}

}  // namespace
}  // namespace kmsfs::fs::lifecycle
