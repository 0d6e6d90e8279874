// Integration: `kmsfs fsck` against a real keyd and real volumes (docs/fsck.md). Every damage the
// tamper tests (fs_tamper_test.cc) make is found by plaintext path and block number; --repair
// leaves a volume that mounts and reads back every healthy byte, with only damaged blocks lost
// (as zeros). Torn block writes (docs/format.md §7.6) read as EIO with one log line through the
// mount, and fsck reports and repairs them.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kGroup = 129 * kPage;

// docs/format.md §7.1, recomputed here so the test does not trust the code it tests.
uint64_t MetaOffset(uint64_t i) { return kPage + (i / 128) * kGroup; }
uint64_t EntryOffset(uint64_t i) { return MetaOffset(i) + (i % 128) * 32; }
uint64_t DataOffset(uint64_t i) { return MetaOffset(i) + kPage + (i % 128) * kPage; }

std::string Pattern(size_t size, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(size, '\0');
  for (auto& c : s) c = static_cast<char>('a' + gen() % 26);
  return s;
}

std::string Zeroed(std::string s, std::initializer_list<size_t> blocks) {
  for (size_t b : blocks) {
    for (size_t i = b * kPage; i < std::min(s.size(), (b + 1) * kPage); ++i) s[i] = '\0';
  }
  return s;
}

RunResult Fsck(Sandbox& box, const std::string& cipherdir, bool repair) {
  std::vector<std::string> argv = {KmsfsBinary(), "fsck"};
  if (repair) argv.push_back("--repair");
  argv.insert(argv.end(), {"--socket", box.socket_path(), cipherdir});
  RunResult r = Run(argv, {}, std::chrono::milliseconds(120'000));
  UNSCOPED_INFO("kmsfs fsck" << (repair ? " --repair" : "") << " -> " << r.exit_code << "\n"
                             << r.out << r.err);
  return r;
}

// The report lines about `path` (lines starting with "path: ").
std::vector<std::string> LinesFor(const std::string& out, const std::string& path) {
  std::vector<std::string> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(path + ": ")) lines.push_back(line);
  }
  return lines;
}

bool Mentions(const std::string& out, const std::string& path, const std::string& text) {
  for (const auto& l : LinesFor(out, path)) {
    if (l.find(text) != std::string::npos) return true;
  }
  return false;
}

// Reads `path` through the mount with O_DIRECT, block by block: 0 per block that read, else
// its errno. Blocks that read must equal `want` (nothing wrong is ever returned).
std::vector<int> ReadBlocks(const std::string& path, const std::string& want, size_t blocks) {
  std::vector<int> result;
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) return std::vector<int>(blocks, errno);
  for (size_t i = 0; i < blocks; ++i) {
    std::string buf(kPage, '\0');
    const ssize_t n = ::pread(fd, buf.data(), kPage, static_cast<off_t>(i * kPage));
    if (n < 0) {
      result.push_back(errno);
      continue;
    }
    buf.resize(static_cast<size_t>(n));
    INFO("block " << i);
    CHECK(buf == (i * kPage < want.size() ? want.substr(i * kPage, kPage) : ""));
    result.push_back(0);
  }
  ::close(fd);
  return result;
}

// A file of 11 blocks, the last partial; and one of 131 blocks over two groups.
constexpr size_t kSmall = 10 * kPage + 100;
constexpr size_t kLarge = 130 * kPage + 7;

TEST_CASE("fsck: a healthy volume of every object kind is clean, and fsck refuses a mounted one",
          "[fsck]") {
  MountedVolume v;
  REQUIRE(::mkdir(v.P("d").c_str(), 0755) == 0);
  WriteFile(v.P("d/big"), Pattern(1024 * 1024 + 1, 1));
  WriteFile(v.P("empty"), "");
  {
    const int fd = ::open(v.P("sparse").c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, "x", 1, 3 * 128 * kPage + 5) == 1);
    ::close(fd);
  }
  WriteFile(v.P(std::string(200, 'L')), "a long name");
  REQUIRE(::symlink("d/big", v.P("link").c_str()) == 0);
  REQUIRE(::link(v.P("d/big").c_str(), v.P("hard").c_str()) == 0);
  REQUIRE(::mkfifo(v.P("fifo").c_str(), 0644) == 0);
  REQUIRE(::setxattr(v.P("empty").c_str(), "user.note", "v", 1, 0) == 0);
  REQUIRE(::setxattr(v.P("d").c_str(), "user.dir", "w", 1, 0) == 0);

  const RunResult mounted = Fsck(v.box, v.cipherdir, false);
  CHECK(mounted.exit_code == 8);
  CHECK(mounted.err.find("mounted on " + v.mountpoint) != std::string::npos);

  REQUIRE(v.mount->Unmount());
  const RunResult r = Fsck(v.box, v.cipherdir, false);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("2 directories, 4 files, 1 symlinks, 1 special files") != std::string::npos);
  CHECK(r.out.find("2 xattrs checked; 0 problems") != std::string::npos);
  // --repair on a healthy volume changes nothing: the same backing bytes, still clean.
  const RunResult repaired = Fsck(v.box, v.cipherdir, true);
  CHECK(repaired.exit_code == 0);
  CHECK(repaired.out.find("0 problems, 0 repaired, 0 left") != std::string::npos);
}

TEST_CASE("fsck: usage errors exit 16 and --help documents the exit codes", "[fsck]") {
  CHECK(Run({KmsfsBinary(), "fsck"}).exit_code == 16);
  CHECK(Run({KmsfsBinary(), "fsck", "--bogus", "/tmp"}).exit_code == 16);
  const RunResult help = Run({KmsfsBinary(), "fsck", "--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("16 usage") != std::string::npos);
  CHECK(help.out.find("4 problems left") != std::string::npos);
  Sandbox box;
  auto keyd = box.StartKeyd();
  CHECK(
      Run({KmsfsBinary(), "fsck", "--socket", box.socket_path(), box.Path("nothing")}).exit_code ==
      8);
}

TEST_CASE("fsck: finds every tamper-test damage by path and block; --repair keeps the rest",
          "[fsck]") {
  MountedVolume v;
  const std::string bdir =
      Locate(v.cipherdir, [&] { REQUIRE(::mkdir(v.P("dir").c_str(), 0755) == 0); });
  struct File {
    std::string name;
    std::string data;
    std::string backing;
  };
  std::vector<File> files = {
      {"healthy", Pattern(kLarge, 1), ""},
      {"data", Pattern(kLarge, 2), ""},
      {"meta", Pattern(kSmall, 3), ""},
      {"swap", Pattern(kSmall, 4), ""},
      {"trunc", Pattern(11 * kPage, 5), ""},
      {"trunc-group", Pattern(129 * kPage, 6), ""},
      {"trunc-meta", Pattern(129 * kPage, 7), ""},
      {"append", Pattern(10 * kPage, 8), ""},
      {"donor", Pattern(kSmall, 9), ""},
      {"hdr", Pattern(kSmall, 10), ""},
      {"hswap-a", Pattern(kSmall, 11), ""},
      {"hswap-b", Pattern(kSmall, 12), ""},
      {"xattr", Pattern(100, 13), ""},
  };
  for (File& f : files) f.backing = Locate(v.cipherdir, [&] { WriteFile(v.P(f.name), f.data); });
  auto backing = [&](const std::string& name) {
    for (const File& f : files) {
      if (f.name == name) return f.backing;
    }
    FAIL("no file " << name);
    return std::string();
  };
  auto data = [&](const std::string& name) {
    for (const File& f : files) {
      if (f.name == name) return f.data;
    }
    return std::string();
  };
  const std::string victim_data = "the victim's contents";
  const std::string victim = Locate(bdir, [&] { WriteFile(v.P("dir/victim"), victim_data); });
  WriteFile(v.P("dir/other"), "other");
  const std::string blink =
      Locate(v.cipherdir, [&] { REQUIRE(::symlink("some/target", v.P("badlink").c_str()) == 0); });
  REQUIRE(::setxattr(v.P("xattr").c_str(), "user.k", "value", 5, 0) == 0);
  REQUIRE(::setxattr(v.P("xattr").c_str(), "user.ok", "fine", 4, 0) == 0);
  REQUIRE(v.mount->Unmount());

  // The damage, as fs_tamper_test.cc makes it.
  FlipByte(backing("data"), DataOffset(5) + 100, 0x80);
  FlipByte(backing("data"), DataOffset(129) + 4095, 0x02);
  FlipByte(backing("data"), DataOffset(130) + 6, 0x10);
  FlipByte(backing("meta"), EntryOffset(2) + 20, 0x40);  // tag of block 2
  Swap(backing("swap"), DataOffset(2), DataOffset(6), kPage);
  Swap(backing("swap"), EntryOffset(2), EntryOffset(6), 32);
  REQUIRE(::truncate(backing("trunc").c_str(), static_cast<off_t>(DataOffset(10))) == 0);
  REQUIRE(::truncate(backing("trunc-group").c_str(), static_cast<off_t>(MetaOffset(128))) == 0);
  REQUIRE(::truncate(backing("trunc-meta").c_str(), static_cast<off_t>(DataOffset(128))) == 0);
  WriteRaw(backing("append"), DataOffset(10), ReadRaw(backing("donor"), DataOffset(10), 100));
  WriteRaw(backing("append"), EntryOffset(10), ReadRaw(backing("donor"), EntryOffset(10), 32));
  {
    const std::string header = ReadRaw(backing("hdr"), 0, kPage);
    const uint64_t blob_len =
        (static_cast<uint8_t>(header[26]) << 8) | static_cast<uint8_t>(header[27]);
    FlipByte(backing("hdr"), 28 + blob_len - 20);  // inside the wrapped DEK's ciphertext
  }
  {
    const std::string ha = ReadRaw(backing("hswap-a"), 0, kPage);
    const std::string hb = ReadRaw(backing("hswap-b"), 0, kPage);
    WriteRaw(backing("hswap-a"), 0, hb);
    WriteRaw(backing("hswap-b"), 0, ha);
  }
  {
    const std::filesystem::path bp(victim);
    std::string name = bp.filename().string();
    name[0] = name[0] == 'A' ? 'B' : 'A';
    std::filesystem::rename(bp, bp.parent_path() / name);
  }
  {
    std::string target(4096, '\0');
    const ssize_t n = ::readlink(blink.c_str(), target.data(), target.size());
    REQUIRE(n > 0);
    target.resize(static_cast<size_t>(n));
    target[2] = target[2] == 'A' ? 'B' : 'A';
    REQUIRE(::unlink(blink.c_str()) == 0);
    REQUIRE(::symlink(target.c_str(), blink.c_str()) == 0);
  }
  {
    std::string value(256, '\0');
    const ssize_t n = ::getxattr(backing("xattr").c_str(), "user.k", value.data(), value.size());
    REQUIRE(n > 0);
    value.resize(static_cast<size_t>(n));
    value[n - 1] ^= 0x01;
    REQUIRE(::setxattr(backing("xattr").c_str(), "user.k", value.data(), value.size(), 0) == 0);
  }
  WriteFile(bdir + "/kmsfs.dirid.tmp", "torn");
  WriteFile(v.cipherdir + "/kmsfs.longname.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.name", "x");
  WriteFile(v.cipherdir + "/kmsfs.junk", "unknown");

  // 1. Check only: everything found, nothing changed, exit 4.
  const RunResult found = Fsck(v.box, v.cipherdir, false);
  CHECK(found.exit_code == 4);
  const std::string& out = found.out;
  CHECK(LinesFor(out, "/healthy").empty());
  CHECK(LinesFor(out, "/donor").empty());
  CHECK(LinesFor(out, "/dir/other").empty());
  CHECK(Mentions(out, "/data", "block 5: does not authenticate"));
  CHECK(Mentions(out, "/data", "blocks 129..130: does not authenticate"));
  CHECK(Mentions(out, "/meta", "block 2: does not authenticate"));
  CHECK(Mentions(out, "/swap", "block 2: does not authenticate"));
  CHECK(Mentions(out, "/swap", "block 6: does not authenticate"));
  CHECK(Mentions(out, "/trunc", "cut at a block boundary"));
  CHECK(Mentions(out, "/trunc-group", "cut at a block boundary"));
  CHECK(Mentions(out, "/trunc-meta", "inside a metadata page"));
  CHECK(Mentions(out, "/append", "extended past its authentic end: block 9 is FINAL"));
  CHECK(Mentions(out, "/hdr", "key does not unwrap"));
  CHECK(Mentions(out, "/hswap-a", "header does not belong"));
  CHECK(Mentions(out, "/hswap-b", "header does not belong"));
  CHECK(Mentions(out, "/badlink", "symlink target does not decrypt"));
  CHECK(Mentions(out, "/xattr", "extended attribute user.k does not decrypt"));
  CHECK_FALSE(Mentions(out, "/xattr", "user.ok"));
  CHECK(out.find("name does not decrypt") != std::string::npos);
  CHECK(out.find("leftover of an interrupted atomic write") != std::string::npos);
  CHECK(out.find("long-name side file without its entry") != std::string::npos);
  CHECK(out.find("kmsfs.junk: unknown file") != std::string::npos);
  // Never plaintext contents, nor the victim's (undecryptable) name.
  for (const File& f : files) CHECK(out.find(f.data.substr(0, 32)) == std::string::npos);
  CHECK(out.find("victim") == std::string::npos);
  CHECK(Fsck(v.box, v.cipherdir, false).out == out);  // nothing was changed

  // 2. Repair: what can be repaired is (exit 1), the rest is left (exit 4): 5.
  const RunResult repaired = Fsck(v.box, v.cipherdir, true);
  CHECK(repaired.exit_code == 5);
  CHECK(Mentions(repaired.out, "/append", "cut back to 40960 bytes"));
  CHECK(Mentions(repaired.out, "/hswap-a", "not repaired"));
  std::string lost;
  {
    const size_t at = repaired.out.find("moved to /lost+found/#");
    REQUIRE(at != std::string::npos);
    const size_t start = at + std::string("moved to ").size();
    lost = repaired.out.substr(start, repaired.out.find('\n', start) - start);
  }

  // 3. Again: only what cannot be repaired is left.
  const RunResult after = Fsck(v.box, v.cipherdir, false);
  CHECK(after.exit_code == 4);
  std::set<std::string> left;
  {
    std::istringstream in(after.out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("volume ")) continue;
      left.insert(line.substr(0, line.find(": ")));
    }
  }
  CHECK(left ==
        std::set<std::string>{"/badlink", "/hdr", "/hswap-a", "/hswap-b", "backing:kmsfs.junk"});

  // 4. The volume mounts and reads: every healthy byte, damaged blocks as zeros.
  v.Remount();
  CHECK(ReadFile(v.P("healthy")) == data("healthy"));
  CHECK(ReadFile(v.P("donor")) == data("donor"));
  CHECK(ReadFile(v.P("data")) == Zeroed(data("data"), {5, 129, 130}));
  CHECK(ReadFile(v.P("meta")) == Zeroed(data("meta"), {2}));
  CHECK(ReadFile(v.P("swap")) == Zeroed(data("swap"), {2, 6}));
  CHECK(ReadFile(v.P("trunc")) == data("trunc").substr(0, 10 * kPage));
  CHECK(ReadFile(v.P("trunc-group")) == data("trunc-group").substr(0, 128 * kPage));
  CHECK(ReadFile(v.P("trunc-meta")) == data("trunc-meta").substr(0, 128 * kPage));
  CHECK(ReadFile(v.P("append")) == data("append"));
  CHECK(ReadFile(v.P("xattr")) == data("xattr"));
  CHECK(ErrnoOf(::getxattr(v.P("xattr").c_str(), "user.k", nullptr, 0)) == ENODATA);
  char ok[8] = {};
  CHECK(::getxattr(v.P("xattr").c_str(), "user.ok", ok, sizeof ok) == 4);
  CHECK(ReadFile(v.P("dir/other")) == "other");
  CHECK(ReadFile(v.P(lost.substr(1))) == victim_data);
  CHECK(ErrnoOf(::open(v.P("hdr").c_str(), O_RDONLY)) == EIO);
  // What fsck could not repair can be removed through the mount.
  CHECK(::unlink(v.P("hdr").c_str()) == 0);
  CHECK(::unlink(v.P("badlink").c_str()) == 0);
  CHECK(v.mount->Unmount());
}

TEST_CASE("fsck: a damaged kmsfs.conf is reported and nothing else is trusted", "[fsck]") {
  MountedVolume v;
  WriteFile(v.P("f"), "f");
  REQUIRE(v.mount->Unmount());
  const std::string conf_path = v.cipherdir + "/kmsfs.conf";
  std::string original;
  {
    std::ifstream in(conf_path, std::ios::binary);
    original.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write_conf = [&](const std::string& text) {
    std::ofstream out(conf_path, std::ios::binary | std::ios::trunc);
    out << text;
  };
  auto edited = [&](const std::string& field) {
    std::string conf = original;
    const size_t k = conf.find("\"" + field + "\"");
    REQUIRE(k != std::string::npos);
    const size_t q = conf.find('"', conf.find(':', k) + 1) + 1;
    conf[q] = conf[q] == '0' ? '1' : '0';
    return conf;
  };
  SECTION("Mac edited: reported, the walk still checks the files") {
    write_conf(edited("Mac"));
    const RunResult r = Fsck(v.box, v.cipherdir, true);
    CHECK(r.exit_code == 4);
    CHECK(r.out.find("MAC mismatch") != std::string::npos);
    CHECK(r.out.find("1 files") != std::string::npos);
  }
  SECTION("VolumeId edited: the name key does not unwrap") {
    write_conf(edited("VolumeId"));
    const RunResult r = Fsck(v.box, v.cipherdir, false);
    CHECK(r.exit_code == 4);
    CHECK(r.out.find("name key does not unwrap") != std::string::npos);
  }
  SECTION("not JSON any more") {
    write_conf(original.substr(0, original.size() / 2));
    const RunResult r = Fsck(v.box, v.cipherdir, false);
    CHECK(r.exit_code == 4);
    CHECK(r.out.find("volume config") != std::string::npos);
  }
  write_conf(original);
  CHECK(Fsck(v.box, v.cipherdir, false).exit_code == 0);
}

TEST_CASE("fsck: a whole file copied over another is found (header-links)", "[fsck]") {
  MountedVolume v;
  const std::string src = Pattern(kSmall, 30);
  const std::string bsrc = Locate(v.cipherdir, [&] { WriteFile(v.P("src"), src); });
  const std::string bdst = Locate(v.cipherdir, [&] { WriteFile(v.P("dst"), Pattern(kPage, 31)); });
  REQUIRE(v.mount->Unmount());
  CHECK(Fsck(v.box, v.cipherdir, false).exit_code == 0);
  std::filesystem::copy_file(bsrc, bdst, std::filesystem::copy_options::overwrite_existing);
  const RunResult r = Fsck(v.box, v.cipherdir, true);
  CHECK(r.exit_code == 4);
  CHECK(Mentions(r.out, "/dst", "not linked under this name"));
  CHECK(LinesFor(r.out, "/src").empty());
  v.Remount();
  CHECK(ReadFile(v.P("src")) == src);
  CHECK(ErrnoOf(::open(v.P("dst").c_str(), O_RDONLY)) == EIO);
  CHECK(v.mount->Unmount());
}

// Waits (bounded) until `log()` has at least one line containing every one of `parts`; returns
// how many lines do.
template <typename LogFn>
size_t LinesWith(LogFn log, const std::vector<std::string>& parts) {
  size_t count = 0;
  for (int i = 0; i < 200 && count == 0; ++i) {
    count = 0;
    std::istringstream in(log());
    std::string line;
    while (std::getline(in, line)) {
      bool all = true;
      for (const auto& p : parts) all = all && line.find(p) != std::string::npos;
      count += all ? 1 : 0;
    }
    if (count == 0) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return count;
}

TEST_CASE("torn writes: a torn block reads as EIO with one log line, fsck repairs it",
          "[fsck][torn]") {
  MountedVolume v;
  const std::string old = Pattern(8 * kPage, 20);
  const std::string backing = Locate(v.cipherdir, [&] { WriteFile(v.P("t"), old); });
  REQUIRE(v.mount->Unmount());
  const std::string old_page = ReadRaw(backing, DataOffset(3), kPage);
  const std::string old_entry = ReadRaw(backing, EntryOffset(3), 32);
  v.Remount();
  {
    const std::string fresh = Pattern(kPage, 21);
    const int fd = ::open(v.P("t").c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, fresh.data(), kPage, 3 * kPage) == static_cast<ssize_t>(kPage));
    ::close(fd);
  }
  REQUIRE(v.mount->Unmount());
  const std::string new_page = ReadRaw(backing, DataOffset(3), kPage);
  const std::string new_entry = ReadRaw(backing, EntryOffset(3), 32);
  struct Tear {
    const char* what;
    std::string page;
    std::string entry;
  };
  const std::vector<Tear> tears = {
      {"half of the new data page, old entry", new_page.substr(0, 2048) + old_page.substr(2048),
       old_entry},
      {"new data page, old entry", new_page, old_entry},
      {"old data page, new entry", old_page, new_entry},
      {"new data page, half of the new entry", new_page,
       new_entry.substr(0, 16) + old_entry.substr(16)},
  };
  const std::string expect_after = Zeroed(old, {3});
  for (const Tear& t : tears) {
    INFO("torn: " << t.what);
    WriteRaw(backing, DataOffset(3), t.page);
    WriteRaw(backing, EntryOffset(3), t.entry);
    Mount m(v.box, v.cipherdir, v.box.Path("mnt-torn"));
    // Block 3 is EIO, once, with one log line naming it; every other block reads.
    std::vector<int> want(8, 0);
    want[3] = EIO;
    CHECK(ReadBlocks(m.Path("t"), old, 8) == want);
    CHECK(LinesWith([&] { return m.Log(); }, {"failed authentication", "block 3:"}) == 1);
    CHECK(m.Unmount());
    const RunResult found = Fsck(v.box, v.cipherdir, false);
    CHECK(found.exit_code == 4);
    CHECK(Mentions(found.out, "/t", "block 3: does not authenticate"));
    const RunResult repaired = Fsck(v.box, v.cipherdir, true);
    CHECK(repaired.exit_code == 1);
    CHECK(Mentions(repaired.out, "/t", "re-sealed as zeros"));
    CHECK(Fsck(v.box, v.cipherdir, false).exit_code == 0);
    Mount again(v.box, v.cipherdir, v.box.Path("mnt-torn"));
    CHECK(ReadFile(again.Path("t")) == expect_after);
    CHECK(again.Unmount());
    // Back to the state before the tear for the next case.
    WriteRaw(backing, DataOffset(3), old_page);
    WriteRaw(backing, EntryOffset(3), old_entry);
  }
  {
    INFO("an append whose entries never reached the disk is cut back to the old end");
    const std::string small = Pattern(2 * kPage + 10, 22);
    Mount m(v.box, v.cipherdir, v.box.Path("mnt-torn"));
    const std::string bsmall = Locate(v.cipherdir, [&] { WriteFile(m.Path("s"), small); });
    CHECK(m.Unmount());
    const std::string meta = ReadRaw(bsmall, MetaOffset(0), kPage);
    const std::string tail = ReadRaw(bsmall, DataOffset(2), 10);
    {
      Mount w(v.box, v.cipherdir, v.box.Path("mnt-torn"));
      const int fd = ::open(w.Path("s").c_str(), O_WRONLY | O_APPEND);
      REQUIRE(fd >= 0);
      const std::string more = Pattern(3 * kPage, 23);
      REQUIRE(::write(fd, more.data(), more.size()) == static_cast<ssize_t>(more.size()));
      ::close(fd);
      CHECK(w.Unmount());
    }
    // The crash hit after the data pages, before any entry: old entries, old final block.
    WriteRaw(bsmall, MetaOffset(0), meta);
    WriteRaw(bsmall, DataOffset(2), tail);
    const RunResult repaired = Fsck(v.box, v.cipherdir, true);
    CHECK(repaired.exit_code == 1);
    CHECK(Mentions(repaired.out, "/s", "cut back to " + std::to_string(small.size())));
    Mount again(v.box, v.cipherdir, v.box.Path("mnt-torn"));
    CHECK(ReadFile(again.Path("s")) == small);
    CHECK(again.Unmount());
  }
}

}  // namespace
}  // namespace kmsfs::it
