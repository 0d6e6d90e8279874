// Integration: tampering with the backing directory under a real kmsfs mount (docs/format.md §5-§8,
// docs/threat-model.md). Each kind of damage must read as EIO; no read ever returns bytes that
// differ from what was written; the undamaged blocks of a file stay readable. Reads go through
// O_DIRECT handles after a remount, so neither the kernel's page cache nor readahead serves
// anything that kmsfs did not decrypt for that very request.
#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kGroup = 129 * kPage;  // a metadata page + 128 data pages

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

// Writes `data` to `rel` (in the volume's root) and returns its backing file.
std::string WriteAndLocate(MountedVolume& v, const std::string& rel, const std::string& data) {
  return Locate(v.cipherdir, [&] { WriteFile(v.P(rel), data); });
}

uint64_t BackingSize(const std::string& path) { return std::filesystem::file_size(path); }

// Reads every 4 KiB block of `path` (through the mount) with its own O_DIRECT pread. Returns, per
// block, 0 when it read, else the errno. A block that reads must be exactly `original`'s bytes
// (CHECKed here: nothing wrong is ever returned). `open_errno` gets open's errno (0 if it opened;
// then no block is read).
std::vector<int> ReadBlocks(const std::string& path, const std::string& original, size_t blocks,
                            int* open_errno = nullptr) {
  std::vector<int> result;
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (open_errno != nullptr) *open_errno = fd < 0 ? errno : 0;
  if (fd < 0) return std::vector<int>(blocks, -errno);
  for (size_t i = 0; i < blocks; ++i) {
    std::string buf(kPage, '\0');
    errno = 0;
    const ssize_t n = ::pread(fd, buf.data(), kPage, static_cast<off_t>(i * kPage));
    if (n < 0) {
      result.push_back(errno);
      continue;
    }
    buf.resize(static_cast<size_t>(n));
    const std::string want = i * kPage < original.size() ? original.substr(i * kPage, kPage) : "";
    INFO("block " << i << " returned " << n << " bytes");
    CHECK(buf == want);  // never wrong plaintext
    result.push_back(0);
  }
  ::close(fd);
  return result;
}

// Buffered read of the whole file: either EIO, or exactly `original`; never other bytes. Returns
// the errno (0 if everything read).
int ReadWhole(const std::string& path, const std::string& original) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return errno;
  std::string got;
  char buf[65536];
  int err = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  // Whatever came back before the error is a prefix of the original.
  CHECK(got.size() <= original.size());
  CHECK(got == original.substr(0, got.size()));
  return err;
}

std::vector<int> AllOkBut(size_t blocks, std::set<size_t> bad, int err = EIO) {
  std::vector<int> v(blocks, 0);
  for (size_t b : bad) v[b] = err;
  return v;
}

// 11 blocks, the last one partial: 10 * 4096 + 100 bytes.
constexpr size_t kSmall = 10 * kPage + 100;
constexpr size_t kSmallBlocks = 11;
// 131 blocks: group 0 full, group 1 holds blocks 128..130 (the last one partial).
constexpr size_t kLarge = 130 * kPage + 7;
constexpr size_t kLargeBlocks = 131;

// Flips, one at a time, each header byte named in `which` (by its Case::what) and checks that
// the file then reads as EIO while the mount and another file stay fine.
void CheckHeaderFlips(const std::set<std::string>& which, bool invert) {
  MountedVolume v;
  const std::string data = Pattern(kSmall, 1);
  const std::string good_data = Pattern(kSmall, 2);
  const std::string victim = WriteAndLocate(v, "victim", data);
  WriteAndLocate(v, "bystander", good_data);
  struct Case {
    const char* what;
    uint64_t offset;
  };
  // Header v1: magic 0..3, version 4..5, flags 6..9, file id 10..25, blob_len 26..27, the wrapped
  // blob from 28 (its key id from 34, its GCM ciphertext and tag at the end), zero padding to
  // 1024, then link slots 0 (1024..2559) and 1 (2560..4095).
  const std::string header = ReadRaw(victim, 0, kPage);
  const uint64_t blob_len = static_cast<uint16_t>((static_cast<uint8_t>(header[26]) << 8) |
                                                  static_cast<uint8_t>(header[27]));
  REQUIRE(blob_len > 80);
  const uint64_t key_id_len = static_cast<uint8_t>(header[28 + 5]);
  const std::vector<Case> cases = {
      {"magic", 1},
      {"version", 5},
      {"flags", 9},
      {"file id", 17},
      {"blob length", 27},
      {"blob magic", 28},
      {"blob key id", 28 + 6 + 2},
      {"blob key version", 28 + 6 + key_id_len + 3},
      {"blob salt", 28 + blob_len - 70},
      {"blob nonce", 28 + blob_len - 55},
      {"blob ciphertext length", 28 + blob_len - 49},
      {"blob ciphertext", 28 + blob_len - 20},
      {"blob tag", 28 + blob_len - 1},
      {"padding after the blob", 28 + blob_len + 5},
      {"last padding byte of the key region", 1023},
      // The only link slot written (slot 0, format.md §6.1): damaged, it reads as torn, no link
      // set is left, and the file's own name is no longer listed.
      {"link slot 0: seq", 1024 + 3},
      {"link slot 0: the tag", 1024 + 8 + 5},
      {"link slot 0: crc", 1024 + 1535},
  };
  for (const Case& c : cases) {
    if ((which.count(c.what) != 0) == invert) continue;
    INFO("flipped: " << c.what << " at byte " << c.offset);
    v.Remount();
    FlipByte(victim, c.offset);
    int open_errno = 0;
    (void)ReadBlocks(v.P("victim"), data, kSmallBlocks, &open_errno);
    // The DEK does not unwrap (or the header does not parse): the open itself fails.
    CHECK(open_errno == EIO);
    CHECK(ReadWhole(v.P("victim"), data) == EIO);
    // The mount and other files are unaffected.
    CHECK(ReadFile(v.P("bystander")) == good_data);
    FlipByte(victim, c.offset);  // restore
  }
  if (invert) {
    // Slot 1 was never written: a flip there is a torn write of a slot nobody reads.
    v.Remount();
    FlipByte(victim, kPage - 1);
    CHECK(ReadFile(v.P("victim")) == data);
    FlipByte(victim, kPage - 1);
  }
  v.Remount();
  CHECK(ReadFile(v.P("victim")) == data);  // the flips, not something else, made the EIO
  CHECK(v.mount->Unmount());
}

TEST_CASE(
    "tamper: a byte flipped in a file header (blob, file id, magic, padding, link slot) is EIO",
    "[fs][tamper]") {
  CheckHeaderFlips({"blob key id"}, /*invert=*/true);
}

// A flipped byte in the wrapped DEK's key id names a key keyd does not have: keyd answers
// NotFoundException, and fs/core turns that into kCorrupt (EIO), not ENOENT, for a file header.
TEST_CASE("tamper: a byte flipped in the header blob's key id is EIO, not ENOENT", "[fs][tamper]") {
  CheckHeaderFlips({"blob key id"}, /*invert=*/false);
}

TEST_CASE("tamper: a byte flipped in a data page is EIO for that block only, in either group",
          "[fs][tamper]") {
  MountedVolume v;
  const std::string data = Pattern(kLarge, 3);
  const std::string backing = WriteAndLocate(v, "big", data);
  REQUIRE(BackingSize(backing) == DataOffset(130) + 7);
  v.Remount();
  FlipByte(backing, DataOffset(5) + 100, 0x80);     // group 0
  FlipByte(backing, DataOffset(129) + 4095, 0x02);  // group 1, last byte of a full block
  FlipByte(backing, DataOffset(130) + 6, 0x10);     // the partial last block
  CHECK(ReadBlocks(v.P("big"), data, kLargeBlocks) == AllOkBut(kLargeBlocks, {5, 129, 130}));
  CHECK(ReadWhole(v.P("big"), data) == EIO);
  // Rewriting a damaged block through the mount repairs it.
  {
    const int fd = ::open(v.P("big").c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    CHECK(::pwrite(fd, data.data() + 5 * kPage, kPage, 5 * kPage) == static_cast<ssize_t>(kPage));
    ::close(fd);
  }
  v.Remount();
  CHECK(ReadBlocks(v.P("big"), data, kLargeBlocks) == AllOkBut(kLargeBlocks, {129, 130}));
  CHECK(v.mount->Unmount());
}

TEST_CASE("tamper: a byte flipped in a metadata entry (nonce, tag, flags, reserved) is EIO",
          "[fs][tamper]") {
  MountedVolume v;
  const std::string data = Pattern(kLarge, 4);
  const std::string backing = WriteAndLocate(v, "meta", data);
  struct Case {
    const char* what;
    uint64_t offset;
    uint8_t mask;
    size_t block;
  };
  const std::vector<Case> cases = {
      {"nonce of block 2", EntryOffset(2) + 3, 0x01, 2},
      {"tag of block 2", EntryOffset(2) + 20, 0x40, 2},
      {"flags of block 2: FINAL set on a middle block", EntryOffset(2) + 28, 0x01, 2},
      {"flags of block 2: HOLE set on a data block", EntryOffset(2) + 28, 0x02, 2},
      {"flags of block 2: an unknown bit", EntryOffset(2) + 28, 0x80, 2},
      {"reserved byte of block 2", EntryOffset(2) + 30, 0x01, 2},
      {"nonce of block 128 (group 1's first entry)", EntryOffset(128), 0x04, 128},
      {"FINAL cleared on the last block", EntryOffset(130) + 28, 0x01, 130},
  };
  for (const Case& c : cases) {
    INFO("flipped: " << c.what);
    v.Remount();
    FlipByte(backing, c.offset, c.mask);
    CHECK(ReadBlocks(v.P("meta"), data, kLargeBlocks) == AllOkBut(kLargeBlocks, {c.block}));
    FlipByte(backing, c.offset, c.mask);
  }
  SECTION("an entry after FINAL that is not empty makes the last group EIO") {
    v.Remount();
    FlipByte(backing, EntryOffset(131) + 1, 0x01);  // the first entry past the last block
    const auto blocks = ReadBlocks(v.P("meta"), data, kLargeBlocks);
    CHECK(blocks[130] == EIO);
    for (size_t i = 0; i < 128; ++i) CHECK(blocks[i] == 0);  // group 0 does not care
  }
  CHECK(v.mount->Unmount());
}

TEST_CASE("tamper: swapping two blocks with their entries within a file is EIO for both",
          "[fs][tamper]") {
  MountedVolume v;
  const std::string data = Pattern(kSmall, 5);
  const std::string backing = WriteAndLocate(v, "swap", data);
  v.Remount();
  Swap(backing, DataOffset(2), DataOffset(6), kPage);
  Swap(backing, EntryOffset(2), EntryOffset(6), 32);
  CHECK(ReadBlocks(v.P("swap"), data, kSmallBlocks) == AllOkBut(kSmallBlocks, {2, 6}));
  SECTION("a data page alone swapped, entries left in place, too") {
    Swap(backing, EntryOffset(2), EntryOffset(6), 32);  // entries back; pages stay swapped
    v.Remount();
    CHECK(ReadBlocks(v.P("swap"), data, kSmallBlocks) == AllOkBut(kSmallBlocks, {2, 6}));
  }
  CHECK(v.mount->Unmount());
}

TEST_CASE("tamper: headers swapped between two files leave both unreadable (EIO)", "[fs][tamper]") {
  MountedVolume v;
  const std::string a = Pattern(kSmall, 6);
  const std::string b = Pattern(kSmall, 7);
  const std::string ba = WriteAndLocate(v, "a", a);
  const std::string bb = WriteAndLocate(v, "b", b);
  v.Remount();
  REQUIRE(ba != bb);
  const std::string ha = ReadRaw(ba, 0, kPage);
  const std::string hb = ReadRaw(bb, 0, kPage);
  WriteRaw(ba, 0, hb);
  WriteRaw(bb, 0, ha);
  // Each header unwraps (its blob is bound to its own file id, which moved with it), but every
  // block's AAD names the other file id and its DEK is the other one: no block authenticates.
  for (const auto& [name, original] : {std::pair{"a", a}, std::pair{"b", b}}) {
    INFO(name);
    int open_errno = 0;
    const auto blocks = ReadBlocks(v.P(name), original, kSmallBlocks, &open_errno);
    if (open_errno == 0) {
      CHECK(blocks == AllOkBut(kSmallBlocks, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
    } else {
      CHECK(open_errno == EIO);
    }
    CHECK(ReadWhole(v.P(name), original) == EIO);
  }
  CHECK(v.mount->Unmount());
}

TEST_CASE("tamper: a block and its entry transplanted from another file are EIO", "[fs][tamper]") {
  MountedVolume v;
  const std::string a = Pattern(kSmall, 8);
  const std::string b = Pattern(kSmall, 9);
  const std::string ba = WriteAndLocate(v, "a", a);
  const std::string bb = WriteAndLocate(v, "b", b);
  v.Remount();
  WriteRaw(ba, DataOffset(4), ReadRaw(bb, DataOffset(4), kPage));
  WriteRaw(ba, EntryOffset(4), ReadRaw(bb, EntryOffset(4), 32));
  CHECK(ReadBlocks(v.P("a"), a, kSmallBlocks) == AllOkBut(kSmallBlocks, {4}));
  CHECK(ReadBlocks(v.P("b"), b, kSmallBlocks) == AllOkBut(kSmallBlocks, {}));
  CHECK(v.mount->Unmount());
}

// docs/format.md §6.2: a file header lists the directory entries that may name the file (link
// tags under a key derived from the volume's name key), and an open checks the entry it came
// through. A complete file placed under another name is EIO there, and keyd is not even asked.
TEST_CASE("tamper: a whole-file copy over another file in the same volume is EIO, the source reads",
          "[fs][tamper][links]") {
  MountedVolume v;
  const std::string src = Pattern(kSmall, 10);
  const std::string dst = Pattern(3 * kPage, 11);
  const std::string bsrc = WriteAndLocate(v, "src", src);
  const std::string bdst = WriteAndLocate(v, "dst", dst);
  // Long names (a kmsfs.longname.* entry and its side file) are bound the same way.
  const std::string long_name(200, 'L');
  WriteFile(v.P(long_name), dst);
  std::string blong;  // BackingEntries skips kmsfs.* names: find the long-name entry itself
  for (const auto& e : std::filesystem::directory_iterator(v.cipherdir)) {
    const std::string n = e.path().filename().string();
    if (n.starts_with("kmsfs.longname.") && !n.ends_with(".name")) blong = e.path().string();
  }
  REQUIRE_FALSE(blong.empty());
  v.Remount();
  std::filesystem::copy_file(bsrc, bdst, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(bsrc, blong, std::filesystem::copy_options::overwrite_existing);
  for (const std::string& victim : {std::string("dst"), long_name}) {
    INFO("victim: " << victim.substr(0, 8));
    int open_errno = 0;
    ReadBlocks(v.P(victim), src, 3, &open_errno);
    CHECK(open_errno == EIO);
    CHECK(ReadWhole(v.P(victim), src) == EIO);
  }
  CHECK(ReadFile(v.P("src")) == src);
  // The mount stays usable: the victim's name can be unlinked and written anew.
  REQUIRE(::unlink(v.P("dst").c_str()) == 0);
  WriteFile(v.P("dst"), "fresh");
  CHECK(ReadFile(v.P("dst")) == "fresh");
  CHECK(v.mount->Unmount());
  // One warn line per refused open, naming the inode, never a name.
  const std::string log = v.mount->Log();
  CHECK(log.find("not linked under this name") != std::string::npos);
  CHECK(log.find(long_name) == std::string::npos);
  SECTION("and a copy into another volume is detected (EIO)") {
    const std::string other_key = CreateKey(v.box);
    const std::string other_cipher = v.box.Path("cipher2");
    InitVolume(v.box, other_key, other_cipher);
    Mount other(v.box, other_cipher, v.box.Path("mnt2"));
    const auto before = BackingEntries(other_cipher);
    WriteFile(other.Path("victim"), dst);
    std::string bvictim;
    for (const auto& p : BackingEntries(other_cipher)) {
      if (!before.count(p)) bvictim = p;
    }
    REQUIRE_FALSE(bvictim.empty());
    CHECK(other.Unmount());
    std::filesystem::copy_file(bsrc, bvictim, std::filesystem::copy_options::overwrite_existing);
    Mount again(v.box, other_cipher, v.box.Path("mnt2"));
    CHECK(ReadWhole(again.Path("victim"), src) == EIO);
    CHECK(again.Unmount());
  }
}

TEST_CASE("tamper: two files' backing names swapped leave both EIO", "[fs][tamper][links]") {
  MountedVolume v;
  const std::string a = Pattern(kSmall, 20);
  const std::string b = Pattern(kPage + 1, 21);
  const std::string ba = WriteAndLocate(v, "a", a);
  const std::string bdir =
      Locate(v.cipherdir, [&] { REQUIRE(::mkdir(v.P("e").c_str(), 0755) == 0); });
  const std::string bb = Locate(bdir, [&] { WriteFile(v.P("e/b"), b); });
  const std::string bc = WriteAndLocate(v, "c", "third");
  v.Remount();
  SECTION("two files in one directory") {
    std::filesystem::rename(ba, ba + ".tmp");
    std::filesystem::rename(bc, ba);
    std::filesystem::rename(ba + ".tmp", bc);
    CHECK(ReadWhole(v.P("a"), a) == EIO);
    CHECK(ReadWhole(v.P("c"), "third") == EIO);
  }
  SECTION("a file moved into another directory, over a file there") {
    // The name decrypts only in its own directory, so the attacker keeps b's backing name and
    // puts a's contents under it.
    std::filesystem::rename(ba, bb);
    CHECK(ReadWhole(v.P("e/b"), a) == EIO);
    struct stat st;
    CHECK(ErrnoOf(::stat(v.P("a").c_str(), &st)) == ENOENT);
  }
  CHECK(v.mount->Unmount());
}

TEST_CASE("links: hard links, renames and exchanges keep working across remounts", "[fs][links]") {
  MountedVolume v;
  const std::string a = Pattern(kSmall, 30);
  const std::string x = Pattern(100, 31);
  const std::string y = Pattern(kPage, 32);
  const std::string long_name(220, 'n');
  WriteFile(v.P("a"), a);
  WriteFile(v.P("x"), x);
  WriteFile(v.P("y"), y);
  REQUIRE(::mkdir(v.P("d1").c_str(), 0755) == 0);
  REQUIRE(::mkdir(v.P("d1/sub").c_str(), 0755) == 0);
  REQUIRE(::link(v.P("a").c_str(), v.P("d1/a-link").c_str()) == 0);
  REQUIRE(::link(v.P("a").c_str(), v.P(long_name).c_str()) == 0);
  REQUIRE(::rename(v.P("d1/a-link").c_str(), v.P("d1/sub/moved").c_str()) == 0);
  REQUIRE(::renameat2(AT_FDCWD, v.P("x").c_str(), AT_FDCWD, v.P("y").c_str(), RENAME_EXCHANGE) ==
          0);
  // A directory rename moves its children without touching their headers.
  REQUIRE(::rename(v.P("d1").c_str(), v.P("d2").c_str()) == 0);
  // A read-only file renames too (its header's link slot is rewritten all the same).
  WriteFile(v.P("ro"), "read-only");
  REQUIRE(::chmod(v.P("ro").c_str(), 0444) == 0);
  REQUIRE(::rename(v.P("ro").c_str(), v.P("d2/ro").c_str()) == 0);
  // Replacing a file that keeps another name: the survivor still opens under it.
  WriteFile(v.P("victim"), "replaced");
  REQUIRE(::link(v.P("victim").c_str(), v.P("survivor").c_str()) == 0);
  WriteFile(v.P("newcomer"), "newcomer");
  REQUIRE(::rename(v.P("newcomer").c_str(), v.P("victim").c_str()) == 0);

  auto check_all = [&] {
    CHECK(ReadFile(v.P("a")) == a);
    CHECK(ReadFile(v.P("d2/sub/moved")) == a);
    CHECK(ReadFile(v.P(long_name)) == a);
    CHECK(ReadFile(v.P("x")) == y);
    CHECK(ReadFile(v.P("y")) == x);
    CHECK(ReadFile(v.P("d2/ro")) == "read-only");
    CHECK(ReadFile(v.P("victim")) == "newcomer");
    CHECK(ReadFile(v.P("survivor")) == "replaced");
  };
  check_all();
  v.Remount();
  check_all();
  // Unlinking names one by one: the rest keep opening, after a remount too.
  REQUIRE(::unlink(v.P("a").c_str()) == 0);
  REQUIRE(::unlink(v.P(long_name).c_str()) == 0);
  CHECK(ReadFile(v.P("d2/sub/moved")) == a);
  v.Remount();
  CHECK(ReadFile(v.P("d2/sub/moved")) == a);
  struct stat st;
  REQUIRE(::stat(v.P("d2/sub/moved").c_str(), &st) == 0);
  CHECK(st.st_nlink == 1);
  CHECK(v.mount->Unmount());
}

TEST_CASE("links: rename, link and unlink keep the file's mtime", "[fs][links]") {
  MountedVolume v;
  WriteFile(v.P("f"), Pattern(kPage + 10, 33));
  // An mtime far from "now", so a link-slot write that moved it could not go unnoticed.
  const struct timespec old_times[2] = {{1'000'000'000, 123}, {1'100'000'000, 456}};
  REQUIRE(::utimensat(AT_FDCWD, v.P("f").c_str(), old_times, 0) == 0);
  auto mtime_of = [&](const std::string& name) {
    struct stat st;
    REQUIRE(::stat(v.P(name).c_str(), &st) == 0);
    return std::pair(st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  };
  const auto want = std::pair(old_times[1].tv_sec, old_times[1].tv_nsec);
  REQUIRE(mtime_of("f") == want);
  REQUIRE(::rename(v.P("f").c_str(), v.P("g").c_str()) == 0);  // add + remove of a tag
  REQUIRE(::link(v.P("g").c_str(), v.P("h").c_str()) == 0);
  REQUIRE(::link(v.P("g").c_str(), v.P("i").c_str()) == 0);
  REQUIRE(::unlink(v.P("i").c_str()) == 0);  // one of several names: its tag goes
  CHECK(mtime_of("g") == want);
  // After a remount nothing is cached: this is the backing file's own mtime.
  v.Remount();
  CHECK(mtime_of("g") == want);
  CHECK(mtime_of("h") == want);
  CHECK(ReadFile(v.P("h")) == Pattern(kPage + 10, 33));
  CHECK(v.mount->Unmount());
}

TEST_CASE("links: the other name opens right after the name last looked up is unlinked",
          "[fs][links]") {
  MountedVolume v;
  WriteFile(v.P("one"), "shared");
  REQUIRE(::link(v.P("one").c_str(), v.P("two").c_str()) == 0);
  for (int round = 0; round < 20; ++round) {
    INFO("round " << round);
    const std::string keep = round % 2 ? "one" : "two";
    const std::string gone = round % 2 ? "two" : "one";
    struct stat st;
    REQUIRE(::stat(v.P(keep).c_str(), &st) == 0);  // both names' dentries are cached now...
    REQUIRE(::stat(v.P(gone).c_str(), &st) == 0);  // ...and kmsfs last saw `gone`
    REQUIRE(::unlink(v.P(gone).c_str()) == 0);
    CHECK(ReadFile(v.P(keep)) == "shared");  // through the cached dentry of `keep`
    REQUIRE(::link(v.P(keep).c_str(), v.P(gone).c_str()) == 0);
  }
  SECTION("an open-unlinked file reopens through /proc") {
    const int fd = ::open(v.P("one").c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::unlink(v.P("one").c_str()) == 0);
    REQUIRE(::unlink(v.P("two").c_str()) == 0);
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    CHECK(ReadFile(proc) == "shared");
    ::close(fd);
  }
  CHECK(v.mount->Unmount());
}

TEST_CASE("links: at most 64 names per file, then EMLINK", "[fs][links]") {
  MountedVolume v;
  WriteFile(v.P("f"), "many names");
  for (int i = 1; i < 64; ++i) {
    REQUIRE(::link(v.P("f").c_str(), v.P("n" + std::to_string(i)).c_str()) == 0);
  }
  CHECK(ErrnoOf(::link(v.P("f").c_str(), v.P("n64").c_str())) == EMLINK);
  // Renames still work at the limit (the new tag exists next to the old one for a moment).
  REQUIRE(::rename(v.P("n5").c_str(), v.P("renamed").c_str()) == 0);
  v.Remount();
  CHECK(ReadFile(v.P("renamed")) == "many names");
  CHECK(ReadFile(v.P("n63")) == "many names");
  CHECK(v.mount->Unmount());
}

TEST_CASE("tamper: truncating the backing file at a block boundary is EIO at the end",
          "[fs][tamper]") {
  MountedVolume v;
  SECTION("the last data page dropped: the new last block is not FINAL") {
    const std::string data = Pattern(11 * kPage, 12);  // 11 full blocks
    const std::string backing = WriteAndLocate(v, "t", data);
    REQUIRE(BackingSize(backing) == DataOffset(10) + kPage);
    v.Remount();
    REQUIRE(::truncate(backing.c_str(), static_cast<off_t>(DataOffset(10))) == 0);
    struct stat st;
    REQUIRE(::stat(v.P("t").c_str(), &st) == 0);  // a possible size: 10 blocks
    CHECK(st.st_size == static_cast<off_t>(10 * kPage));
    CHECK(ReadBlocks(v.P("t"), data, 10) == AllOkBut(10, {9}));
    CHECK(ReadWhole(v.P("t"), data) == EIO);
  }
  SECTION(
      "group 1's only block dropped with its metadata page: group 0's last block is not FINAL") {
    const std::string data = Pattern(129 * kPage, 13);
    const std::string backing = WriteAndLocate(v, "t", data);
    REQUIRE(BackingSize(backing) == DataOffset(128) + kPage);
    v.Remount();
    REQUIRE(::truncate(backing.c_str(), static_cast<off_t>(MetaOffset(128))) == 0);
    CHECK(ReadBlocks(v.P("t"), data, 128) == AllOkBut(128, {127}));
    CHECK(ReadWhole(v.P("t"), data) == EIO);
  }
  SECTION("group 1's only data page dropped, its metadata page kept: an impossible size") {
    const std::string data = Pattern(129 * kPage, 14);
    const std::string backing = WriteAndLocate(v, "t", data);
    v.Remount();
    REQUIRE(::truncate(backing.c_str(), static_cast<off_t>(DataOffset(128))) == 0);
    struct stat st;
    CHECK(ErrnoOf(::stat(v.P("t").c_str(), &st)) == EIO);
    CHECK(ErrnoOf(::open(v.P("t").c_str(), O_RDONLY)) == EIO);
  }
  SECTION("cut inside the last block: the length in the AAD no longer matches") {
    const std::string data = Pattern(kSmall, 15);
    const std::string backing = WriteAndLocate(v, "t", data);
    v.Remount();
    REQUIRE(::truncate(backing.c_str(), static_cast<off_t>(BackingSize(backing) - 50)) == 0);
    CHECK(ReadBlocks(v.P("t"), data, kSmallBlocks) == AllOkBut(kSmallBlocks, {10}));
  }
  CHECK(v.mount->Unmount());
}

TEST_CASE("tamper: a block appended from another file is EIO at the end", "[fs][tamper]") {
  MountedVolume v;
  const std::string a = Pattern(10 * kPage, 16);  // blocks 0..9, block 9 FINAL
  const std::string b = Pattern(kSmall, 17);      // blocks 0..10
  const std::string ba = WriteAndLocate(v, "a", a);
  const std::string bb = WriteAndLocate(v, "b", b);
  REQUIRE(BackingSize(ba) == DataOffset(10));
  v.Remount();
  // b's block 10 (data page and entry) becomes a's block 10.
  WriteRaw(ba, DataOffset(10), ReadRaw(bb, DataOffset(10), 100));
  WriteRaw(ba, EntryOffset(10), ReadRaw(bb, EntryOffset(10), 32));
  struct stat st;
  REQUIRE(::stat(v.P("a").c_str(), &st) == 0);
  CHECK(st.st_size == static_cast<off_t>(10 * kPage + 100));
  // Block 9 is FINAL but no longer last; block 10 belongs to another file.
  CHECK(ReadBlocks(v.P("a"), a, 11) == AllOkBut(11, {9, 10}));
  CHECK(ReadWhole(v.P("a"), a) == EIO);
  SECTION("a whole data page appended without an entry") {
    REQUIRE(::truncate(ba.c_str(), static_cast<off_t>(DataOffset(10))) == 0);
    WriteRaw(ba, EntryOffset(10), std::string(32, '\0'));
    WriteRaw(ba, DataOffset(10), ReadRaw(bb, DataOffset(3), kPage));
    v.Remount();
    const auto blocks = ReadBlocks(v.P("a"), a, 11);
    CHECK(blocks[9] == EIO);
    CHECK(blocks[10] == EIO);
    for (size_t i = 0; i < 9; ++i) CHECK(blocks[i] == 0);
  }
  CHECK(v.mount->Unmount());
}

TEST_CASE("tamper: a flipped encrypted name hides the entry, and the original name is ENOENT",
          "[fs][tamper]") {
  MountedVolume v;
  const std::string bdir =
      Locate(v.cipherdir, [&] { REQUIRE(::mkdir(v.P("dir").c_str(), 0755) == 0); });
  const std::string data = "contents of the renamed victim";
  const std::string backing = Locate(bdir, [&] { WriteFile(v.P("dir/victim"), data); });
  WriteFile(v.P("dir/other"), "other");
  v.Remount();
  // Change one base64url character of the backing name (the first: every bit of it is used), so
  // the name stays well-formed but its SIV tag no longer matches.
  const std::filesystem::path bp(backing);
  std::string name = bp.filename().string();
  name[0] = name[0] == 'A' ? 'B' : 'A';
  std::filesystem::rename(bp, bp.parent_path() / name);
  std::set<std::string> listed;
  for (const auto& e : std::filesystem::directory_iterator(v.P("dir"))) {
    listed.insert(e.path().filename().string());
  }
  // docs/filesystem.md: undecryptable names are left out of listings (one warn line each).
  CHECK(listed == std::set<std::string>{"other"});
  struct stat st;
  CHECK(ErrnoOf(::stat(v.P("dir/victim").c_str(), &st)) == ENOENT);
  CHECK(ReadFile(v.P("dir/other")) == "other");
  // The hidden entry keeps the directory from being removed.
  REQUIRE(::unlink(v.P("dir/other").c_str()) == 0);
  CHECK(ErrnoOf(::rmdir(v.P("dir").c_str())) == ENOTEMPTY);
  SECTION("a name moved into another directory does not decrypt there either") {
    const std::string edir =
        Locate(v.cipherdir, [&] { REQUIRE(::mkdir(v.P("elsewhere").c_str(), 0755) == 0); });
    const std::string moved = WriteAndLocate(v, "mover", "m");
    v.Remount();
    std::filesystem::rename(moved, edir + "/" + std::filesystem::path(moved).filename().string());
    CHECK(std::filesystem::is_empty(v.P("elsewhere")));
    CHECK(ErrnoOf(::stat(v.P("elsewhere/mover").c_str(), &st)) == ENOENT);
    CHECK(ErrnoOf(::stat(v.P("mover").c_str(), &st)) == ENOENT);
  }
  CHECK(v.mount->Unmount());
  CHECK(v.mount->Log().find("victim") == std::string::npos);
}

// kmsfs.conf edited: the mount refuses (exit 6, corrupt) and nothing gets mounted.
TEST_CASE("tamper: an edited kmsfs.conf makes the mount fail clearly", "[fs][tamper]") {
  MountedVolume v;
  WriteFile(v.P("f"), "f");
  CHECK(v.mount->Unmount());
  const std::string conf_path = v.cipherdir + "/kmsfs.conf";
  std::string original;
  {
    std::ifstream in(conf_path, std::ios::binary);
    original.assign(std::istreambuf_iterator<char>(in), {});
  }
  REQUIRE_FALSE(original.empty());
  auto edit_field = [&](const std::string& field, auto change) {
    std::string conf = original;
    const size_t k = conf.find("\"" + field + "\"");
    REQUIRE(k != std::string::npos);
    const size_t q = conf.find('"', conf.find(':', k) + 1);  // opening quote of a string value
    REQUIRE(q != std::string::npos);
    change(conf, q + 1);
    return conf;
  };
  auto next_hex = [](std::string& c, size_t at) { c[at] = c[at] == '0' ? '1' : '0'; };
  const std::string other_key = CreateKey(v.box);
  struct Case {
    const char* what;
    std::string conf;
  };
  const std::vector<Case> cases = {
      {"Mac", edit_field("Mac", next_hex)},
      {"VolumeId", edit_field("VolumeId", next_hex)},
      {"CreatedAt", edit_field("CreatedAt",
                               [](std::string& c, size_t at) {
                                 c[at + 3] = c[at + 3] == '0' ? '1' : '0';  // the year's last digit
                               })},
      {"KeyId (another valid key)", edit_field("KeyId",
                                               [&](std::string& c, size_t at) {
                                                 const size_t end = c.find('"', at);
                                                 c.replace(at, end - at, other_key);
                                               })},
      {"NameKeyBlob", edit_field("NameKeyBlob",
                                 [](std::string& c, size_t at) {
                                   char& ch = c[at + 120];  // inside the wrapped key's ciphertext
                                   ch = ch == 'A' ? 'B' : 'A';
                                 })},
  };
  for (const Case& c : cases) {
    INFO("edited: " << c.what);
    REQUIRE(c.conf != original);
    {
      std::ofstream out(conf_path, std::ios::binary | std::ios::trunc);
      out << c.conf;
    }
    Mount::Options o;
    o.wait_ready = false;
    Mount m(v.box, v.cipherdir, v.box.Path("mnt-bad"), o);
    CHECK_FALSE(m.WaitReady(std::chrono::milliseconds(15'000)));
    CHECK_FALSE(IsMounted(m.mountpoint()));
    CHECK_FALSE(m.Unmount());
    INFO(m.Log());
    REQUIRE(m.exit_code().has_value());
    CHECK(*m.exit_code() == 6);  // kCorrupt (docs/filesystem.md exit codes)
    CHECK_FALSE(m.Log().empty());
  }
  {
    std::ofstream out(conf_path, std::ios::binary | std::ios::trunc);
    out << original;
  }
  Mount ok(v.box, v.cipherdir, v.box.Path("mnt-ok"));
  CHECK(ReadFile(ok.Path("f")) == "f");
  CHECK(ok.Unmount());
}

}  // namespace
}  // namespace kmsfs::it
