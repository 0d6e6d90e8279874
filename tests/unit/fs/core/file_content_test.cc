#include "fs/core/file_content.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/format/block_layout.h"
#include "tests/catch.h"
#include "tests/fakes/faulty_backing_file.h"
#include "tests/fakes/mem_backing_file.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs {
namespace {

using format::BackingSizeForPlaintextSize;
using format::DataOffset;
using format::EntryOffsetInMeta;
using format::MetaOffset;
using testing::Pattern;
using testing::TestFile;

constexpr uint64_t kB = format::kBlockSize;
constexpr uint64_t kGroupBytes = format::kBlocksPerGroup * kB;  // plaintext bytes per group
constexpr uint64_t kGiB = uint64_t{1} << 30;

uint64_t EntryAt(uint64_t block) { return MetaOffset(block) + EntryOffsetInMeta(block); }

uint64_t ExpectedBacking(uint64_t size) { return BackingSizeForPlaintextSize(size).value(); }

format::MetaEntry RawEntry(const fakes::MemBackingFile& mem, uint64_t block) {
  return format::ParseMetaEntry(mem.RawRead(EntryAt(block), 32)).value();
}

void RequireCorrupt(const Status& st) {
  INFO(st.ToString());
  REQUIRE_FALSE(st.ok());
  CHECK(st.code() == Code::kCorrupt);
}
template <class T>
void RequireCorrupt(const Result<T>& r) {
  RequireCorrupt(r.status());
}

// Reads [offset, offset + len) and returns the status; the buffer must come back zeroed on error.
Status ReadRange(FileContent& fc, uint64_t offset, size_t len, Bytes* out) {
  out->assign(len, 0xEE);
  auto n = fc.Read(*out, offset);
  if (!n.ok()) {
    for (uint8_t c : *out) {
      if (c != 0) return Error(Code::kInternal, "failed read left bytes in the buffer");
    }
    return n.error();
  }
  out->resize(*n);
  return Status::Ok();
}

TEST_CASE("an empty file is a header plus one metadata page with a FINAL block 0",
          "[fs][content]") {
  TestFile f;
  CHECK(f.mem.RawSize() == 8192);
  CHECK(f.content->Size().value() == 0);
  Bytes buf(10);
  CHECK(f.content->Read(buf, 0).value() == 0);
  CHECK(f.content->Read(buf, 12345).value() == 0);
  const format::MetaEntry e = RawEntry(f.mem, 0);
  CHECK(e.IsFinal());
  CHECK_FALSE(e.IsHole());
  for (uint64_t b = 1; b < 128; ++b) CHECK(RawEntry(f.mem, b).IsEmpty());

  SECTION("initializing twice is refused") {
    CHECK(f.content->InitializeEmpty().code() == Code::kFailedPrecondition);
  }
  SECTION("a file cut to its header is corrupt, not empty") {
    f.mem.RawTruncate(4096);
    f.content->ForgetBackingSize();  // changed behind its back: it must look again
    RequireCorrupt(f.content->Size());
  }
  SECTION("the empty file's FINAL entry is authenticated") {
    Bytes e0 = f.mem.RawRead(EntryAt(0), 32);
    e0[20] ^= 1;
    f.mem.RawWrite(EntryAt(0), e0);
    RequireCorrupt(f.content->Write(AsBytes("x"), 5000));
    CHECK(f.content->Size().value() == 0);  // nothing was written
  }
}

TEST_CASE("round trips at block and group boundaries", "[fs][content]") {
  const uint64_t sizes[] = {0,        1,           4095,        4096,          4097,
                            8191,     kGroupBytes - 1, kGroupBytes, kGroupBytes + 1,
                            (1 << 20) + 1, 3 * kGroupBytes + 5};
  for (uint64_t size : sizes) {
    CAPTURE(size);
    TestFile f;
    const Bytes data = Pattern(size);
    REQUIRE(f.content->Write(data, 0).ok());
    CHECK(f.content->Size().value() == size);
    CHECK(f.mem.RawSize() == ExpectedBacking(size));
    CHECK(f.ReadAll() == data);

    // Read back in odd-sized pieces through a fresh instance (nothing cached in memory).
    auto again = f.Reopen(&f.mem);
    Bytes pieces;
    for (uint64_t off = 0; off < size; off += 3001) {
      Bytes chunk;
      REQUIRE(ReadRange(*again, off, 3001, &chunk).ok());
      pieces.insert(pieces.end(), chunk.begin(), chunk.end());
    }
    CHECK(pieces == data);

    // Written in odd-sized pieces gives the same plaintext.
    TestFile g;
    for (uint64_t off = 0; off < size; off += 5003) {
      const uint64_t n = std::min<uint64_t>(5003, size - off);
      REQUIRE(g.content->Write(ByteSpan(data.data() + off, n), off).ok());
    }
    CHECK(g.ReadAll() == data);
    CHECK(g.mem.RawSize() == ExpectedBacking(size));
  }
}

TEST_CASE("the final block carries FINAL and only it", "[fs][content]") {
  TestFile f;
  REQUIRE(f.content->Write(Pattern(3 * kB + 10), 0).ok());
  CHECK_FALSE(RawEntry(f.mem, 0).IsFinal());
  CHECK_FALSE(RawEntry(f.mem, 2).IsFinal());
  CHECK(RawEntry(f.mem, 3).IsFinal());
  CHECK(RawEntry(f.mem, 4).IsEmpty());
  REQUIRE(f.content->Write(AsBytes("z"), 5 * kB).ok());  // extend: FINAL moves to block 5
  CHECK_FALSE(RawEntry(f.mem, 3).IsFinal());
  CHECK(RawEntry(f.mem, 4).IsHole());
  CHECK(RawEntry(f.mem, 5).IsFinal());
  CHECK_FALSE(RawEntry(f.mem, 5).IsHole());
}

TEST_CASE("randomized writes, truncates and reads agree with an in-memory model",
          "[fs][content][model]") {
  uint64_t seed = std::random_device{}();
  if (const char* env = std::getenv("KMSFS_TEST_SEED")) seed = std::strtoull(env, nullptr, 10);
  std::printf("file content model test: KMSFS_TEST_SEED=%llu\n",
              static_cast<unsigned long long>(seed));
  CAPTURE(seed);
  std::mt19937_64 rng(seed);
  auto uniform = [&](uint64_t lo, uint64_t hi) {  // inclusive
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  };
  // Up to ~4 groups, so FINAL moves across metadata pages and holes span groups.
  const uint64_t max_size = 4 * kGroupBytes + 3 * kB;

  TestFile f;
  Bytes model;
  for (int op = 0; op < 3000; ++op) {
    CAPTURE(op);
    const uint64_t kind = uniform(0, 99);
    if (kind < 45) {  // write: mostly small, sometimes large, sometimes past EOF
      const uint64_t len = kind < 5 ? uniform(1, 300000) : uniform(1, 9000);
      const uint64_t off = uniform(0, max_size - len);
      const Bytes data = Pattern(len, off, static_cast<uint8_t>(op));
      REQUIRE(f.content->Write(data, off).ok());
      if (model.size() < off + len) model.resize(off + len, 0);
      std::copy(data.begin(), data.end(), model.begin() + off);
    } else if (kind < 55) {  // truncate, up or down
      const uint64_t size = uniform(0, 3) == 0 ? uniform(0, 3) * kB : uniform(0, max_size);
      REQUIRE(f.content->Truncate(size).ok());
      model.resize(size, 0);
    } else if (kind < 57) {  // a fresh instance over the same bytes
      f.content = f.Reopen(&f.mem);
    } else {  // read
      const uint64_t off = uniform(0, model.size() + kB);
      const uint64_t len = uniform(0, 3) == 0 ? uniform(0, 200000) : uniform(0, 10000);
      Bytes got;
      REQUIRE(ReadRange(*f.content, off, len, &got).ok());
      const uint64_t expect_len = off >= model.size() ? 0 : std::min(len, model.size() - off);
      REQUIRE(got.size() == expect_len);
      REQUIRE(std::equal(got.begin(), got.end(), model.begin() + std::min(off, model.size())));
    }
    REQUIRE(f.content->Size().value() == model.size());
    REQUIRE(f.mem.RawSize() == ExpectedBacking(model.size()));
  }
  CHECK(f.ReadAll() == model);
}

TEST_CASE("partial writes merge with the bytes around them", "[fs][content]") {
  TestFile f;
  Bytes model = Pattern(5 * kB + 100);
  REQUIRE(f.content->Write(model, 0).ok());
  const Bytes patch(10, 0x5A);
  REQUIRE(f.content->Write(patch, 2 * kB + 7).ok());
  std::copy(patch.begin(), patch.end(), model.begin() + 2 * kB + 7);
  const Bytes across(kB + 20, 0x33);  // straddles blocks 3, 4 and into 5
  REQUIRE(f.content->Write(across, 3 * kB + 4090).ok());
  std::copy(across.begin(), across.end(), model.begin() + 3 * kB + 4090);
  CHECK(f.ReadAll() == model);
  CHECK(f.content->Size().value() == model.size());
}

TEST_CASE("writes past EOF leave authenticated holes that read as zeros", "[fs][content]") {
  TestFile f;
  REQUIRE(f.content->Write(AsBytes("head"), 0).ok());
  const uint64_t far = 3 * kGroupBytes + 123;
  REQUIRE(f.content->Write(AsBytes("tail"), far).ok());
  CHECK(f.content->Size().value() == far + 4);
  Bytes expect(far + 4, 0);
  std::memcpy(expect.data(), "head", 4);
  std::memcpy(expect.data() + far, "tail", 4);
  CHECK(f.ReadAll() == expect);
  CHECK_FALSE(RawEntry(f.mem, 0).IsHole());  // the old final block keeps its data
  for (uint64_t b = 1; b < far / kB; ++b) REQUIRE(RawEntry(f.mem, b).IsHole());
  // Hole data pages were never written (MemBackingFile allocates nothing for them).
  CHECK(f.mem.pages_allocated() <= 1 + 4 + 4);  // header, 4 metadata pages, a few data pages

  SECTION("an empty file extended by a write beyond its end gets a HOLE block 0") {
    TestFile g;
    REQUIRE(g.content->Write(AsBytes("x"), 10000).ok());
    CHECK(RawEntry(g.mem, 0).IsHole());
    CHECK(RawEntry(g.mem, 1).IsHole());
    CHECK(RawEntry(g.mem, 2).IsFinal());
    Bytes expect2(10001, 0);
    expect2[10000] = 'x';
    CHECK(g.ReadAll() == expect2);
  }
  SECTION("writing into a hole turns it into data") {
    REQUIRE(f.content->Write(AsBytes("mid"), kGroupBytes + 10).ok());
    std::memcpy(expect.data() + kGroupBytes + 10, "mid", 3);
    CHECK(f.ReadAll() == expect);
    CHECK_FALSE(RawEntry(f.mem, kGroupBytes / kB).IsHole());
  }
}

TEST_CASE("a 5 GiB sparse file costs only its metadata pages", "[fs][content][sparse]") {
  const uint64_t size = 5 * kGiB;
  const uint64_t meta_pages = size / kGroupBytes;  // 10240
  auto check_sparse = [&](TestFile& f, uint64_t data_pages_max) {
    CHECK(f.content->Size().value() == size);
    CHECK(f.mem.RawSize() == 4096 + 10240 * format::kGroupSize);
    CHECK(f.mem.RawSize() == ExpectedBacking(size));
    // Metadata pages and a handful of data pages; never the 5 GiB of encrypted zeros.
    CHECK(f.mem.bytes_written() <= (meta_pages + data_pages_max) * 4096);
    CHECK(f.mem.pages_allocated() <= 2 + meta_pages + data_pages_max);
    Bytes buf;
    REQUIRE(ReadRange(*f.content, 3 * kGiB + 12345, 100000, &buf).ok());
    CHECK(buf == Bytes(100000, 0));
    REQUIRE(ReadRange(*f.content, size - 4096 - 10, 10, &buf).ok());
    CHECK(buf == Bytes(10, 0));
  };
  SECTION("extended by Truncate") {
    TestFile f;
    REQUIRE(f.content->Truncate(size).ok());
    check_sparse(f, 0);
    CHECK(RawEntry(f.mem, size / kB - 1).IsFinal());
    CHECK(RawEntry(f.mem, size / kB - 1).IsHole());
    // 10240 metadata pages: one pwrite each, not one per entry.
    CHECK(f.mem.write_calls() <= meta_pages + 2);
  }
  SECTION("extended by a one-byte write at 5 GiB - 1") {
    TestFile f;
    REQUIRE(f.content->Write(AsBytes("!"), size - 1).ok());
    check_sparse(f, 1);
    Bytes last;
    REQUIRE(ReadRange(*f.content, size - 2, 10, &last).ok());
    CHECK(last == Bytes{0, '!'});
  }
  SECTION("shrunk back") {
    TestFile f;
    REQUIRE(f.content->Truncate(size).ok());
    REQUIRE(f.content->Write(AsBytes("abc"), 2 * kGiB).ok());
    REQUIRE(f.content->Truncate(2 * kGiB + 2).ok());
    CHECK(f.mem.RawSize() == ExpectedBacking(2 * kGiB + 2));
    Bytes buf;
    REQUIRE(ReadRange(*f.content, 2 * kGiB - 1, 10, &buf).ok());
    CHECK(buf == Bytes{0, 'a', 'b'});
  }
}

TEST_CASE("large writes and reads are batched, not one syscall per block", "[fs][content][io]") {
  const Bytes mib = Pattern(1 << 20, 0, 9);
  SECTION("aligned 1 MiB: 2 groups -> 2 data runs + 2 metadata ranges") {
    TestFile f;
    REQUIRE(f.content->Write(mib, 0).ok());
    CHECK(f.mem.write_calls() == 4);
    CHECK(f.mem.bytes_written() == (1 << 20) + 2 * 128 * 32);
    f.mem.ResetCounters();
    Bytes buf;
    REQUIRE(ReadRange(*f.content, 0, 1 << 20, &buf).ok());
    CHECK(buf == mib);
    CHECK(f.mem.read_calls() <= 4);
  }
  SECTION("unaligned 1 MiB across 3 groups") {
    TestFile f;
    const uint64_t off = 127 * kB + 100;
    REQUIRE(f.content->Truncate(off + (1 << 20) + kB).ok());
    f.mem.ResetCounters();
    REQUIRE(f.content->Write(mib, off).ok());
    // 2 partial blocks read (entry + data each), 3 data runs, 3 metadata ranges.
    CHECK(f.mem.write_calls() == 6);
    CHECK(f.mem.read_calls() <= 4);
    f.mem.ResetCounters();
    Bytes buf;
    REQUIRE(ReadRange(*f.content, off, 1 << 20, &buf).ok());
    CHECK(buf == mib);
    CHECK(f.mem.read_calls() <= 3 + 3 + 2);  // metadata per group, runs, partial blocks
  }
  SECTION("sequential appends") {
    TestFile f;
    for (int i = 0; i < 8; ++i) {
      f.mem.ResetCounters();
      REQUIRE(f.content->Write(mib, uint64_t(i) << 20).ok());
      CHECK(f.mem.write_calls() <= 6);  // + the old final block, re-sealed without FINAL
    }
    CHECK(f.content->Size().value() == 8u << 20);
  }
}

TEST_CASE("truncate shrinks and extends", "[fs][content][truncate]") {
  TestFile f;
  Bytes model = Pattern(2 * kGroupBytes + 5000);
  REQUIRE(f.content->Write(model, 0).ok());

  for (uint64_t size : {2 * kGroupBytes + 4999, 2 * kGroupBytes, kGroupBytes + 1,
                        kGroupBytes, kGroupBytes - 1, uint64_t{4097}, uint64_t{4096},
                        uint64_t{1}, uint64_t{0}}) {
    CAPTURE(size);
    REQUIRE(f.content->Truncate(size).ok());
    model.resize(size);
    CHECK(f.content->Size().value() == size);
    CHECK(f.mem.RawSize() == ExpectedBacking(size));
    CHECK(f.ReadAll() == model);
    const uint64_t last = format::BlockCount(size) - 1;
    CHECK(RawEntry(f.mem, last).IsFinal());
    for (uint64_t b = last + 1; b % 128 != 0; ++b) REQUIRE(RawEntry(f.mem, b).IsEmpty());
  }
  SECTION("extension after shrinking reads zeros, never the old bytes") {
    REQUIRE(f.content->Truncate(3 * kGroupBytes).ok());
    CHECK(f.ReadAll() == Bytes(3 * kGroupBytes, 0));
  }
  SECTION("extension within the final block") {
    REQUIRE(f.content->Write(AsBytes("abc"), 0).ok());
    REQUIRE(f.content->Truncate(100).ok());
    Bytes expect(100, 0);
    std::memcpy(expect.data(), "abc", 3);
    CHECK(f.ReadAll() == expect);
    CHECK(RawEntry(f.mem, 0).IsFinal());
  }
  SECTION("same size is a no-op without I/O") {
    f.mem.ResetCounters();
    REQUIRE(f.content->Truncate(0).ok());
    CHECK(f.mem.write_calls() == 0);
  }
  SECTION("a hole block shrunk stays a hole") {
    REQUIRE(f.content->Truncate(10 * kB).ok());
    REQUIRE(f.content->Truncate(5 * kB + 7).ok());
    CHECK(RawEntry(f.mem, 5).IsHole());
    CHECK(RawEntry(f.mem, 5).IsFinal());
    CHECK(f.ReadAll() == Bytes(5 * kB + 7, 0));
  }
}

TEST_CASE("limits: EFBIG beyond the format's maximum size", "[fs][content]") {
  TestFile f;
  const uint64_t max = format::kMaxPlaintextSize;
  Status st = f.content->Write(AsBytes("x"), max);
  CHECK(st.code() == Code::kInvalidArgument);
  CHECK(st.error().sys_errno() == EFBIG);
  CHECK(f.content->Write(AsBytes("xy"), max - 1).code() == Code::kInvalidArgument);
  CHECK(f.content->Write(AsBytes("x"), UINT64_MAX).code() == Code::kInvalidArgument);
  CHECK(f.content->Truncate(max + 1).code() == Code::kInvalidArgument);
  CHECK(f.content->Write({}, 5000).ok());  // an empty write changes nothing
  CHECK(f.content->Size().value() == 0);
  Bytes buf(5);
  CHECK(f.content->Read(buf, UINT64_MAX).value() == 0);
  CHECK(f.mem.write_calls() == 0);
}

TEST_CASE("wrong key, file id or volume id never yields plaintext", "[fs][content]") {
  TestFile f;
  REQUIRE(f.content->Write(Pattern(10000), 0).ok());
  Bytes buf;
  {
    auto other = FileContent::Open(f.volume_id, f.file_id, testing::DekFromSeed(8), &f.mem);
    RequireCorrupt(ReadRange(**other, 0, 10000, &buf));
  }
  {
    auto other = FileContent::Open(f.volume_id, testing::IdFromSeed(3), f.dek, &f.mem);
    RequireCorrupt(ReadRange(**other, 0, 10000, &buf));
  }
  {
    auto other = FileContent::Open(testing::IdFromSeed(9), f.file_id, f.dek, &f.mem);
    RequireCorrupt(ReadRange(**other, 0, 10000, &buf));
    RequireCorrupt((*other)->Write(AsBytes("x"), 5));  // merging needs the old block
  }
  CHECK(FileContent::Open(f.volume_id, f.file_id, crypto::SecretBytes(16), &f.mem)
            .error()
            .code() == Code::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Tampering with the backing bytes (threat model A2).

struct Tampered {
  TestFile f;
  Bytes plain;
  uint64_t blocks;
  explicit Tampered(uint64_t size = 200 * kB + 100) : plain(Pattern(size, 0, 1)) {
    REQUIRE(f.content->Write(plain, 0).ok());
    blocks = format::BlockCount(size);
  }
  // kCorrupt naming `block` when that block is read, nothing else.
  void ExpectBlockCorrupt(uint64_t block) {
    auto fc = f.Reopen(&f.mem);
    Bytes buf;
    Status st = ReadRange(*fc, block * kB, 10, &buf);
    RequireCorrupt(st);
    CHECK(st.error().message().find("block " + std::to_string(block)) != std::string::npos);
    RequireCorrupt(ReadRange(*fc, 0, plain.size(), &buf));
  }
  // Every block other than `bad` still reads correctly.
  void ExpectOthersReadable(std::initializer_list<uint64_t> bad) {
    auto fc = f.Reopen(&f.mem);
    for (uint64_t b = 0; b < blocks; ++b) {
      if (std::find(bad.begin(), bad.end(), b) != bad.end()) continue;
      const uint64_t len = std::min<uint64_t>(kB, plain.size() - b * kB);
      Bytes buf;
      REQUIRE(ReadRange(*fc, b * kB, len, &buf).ok());
      REQUIRE(std::equal(buf.begin(), buf.end(), plain.begin() + b * kB));
    }
  }
  void Flip(uint64_t offset, uint8_t mask = 0x01) {
    Bytes b = f.mem.RawRead(offset, 1);
    b[0] ^= mask;
    f.mem.RawWrite(offset, b);
  }
};

TEST_CASE("every single-byte change after the header is detected", "[fs][content][tamper]") {
  // A small file: one full block and a partial one. Every byte of the metadata page (entries and
  // the empty ones after FINAL) and of the data pages is covered by a tag or a structure check.
  Tampered t(4096 + 904);
  const Bytes original = t.f.mem.Snapshot();
  for (uint64_t off = 4096; off < original.size(); ++off) {
    CAPTURE(off);
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}}) {
      t.f.mem.Restore(original);
      t.Flip(off, mask);
      auto fc = t.f.Reopen(&t.f.mem);
      Bytes buf;
      Status st = ReadRange(*fc, 0, original.size(), &buf);
      REQUIRE_FALSE(st.ok());
      REQUIRE(st.code() == Code::kCorrupt);
    }
  }
}

TEST_CASE("tamper matrix: moved, swapped, dropped, appended, zeroed blocks", "[fs][content][tamper]") {
  Tampered t;
  auto data_page = [&](uint64_t b) { return t.f.mem.RawRead(DataOffset(b), kB); };
  auto entry = [&](uint64_t b) { return t.f.mem.RawRead(EntryAt(b), 32); };

  SECTION("a flipped data byte") {
    t.Flip(DataOffset(5) + 100);
    t.ExpectBlockCorrupt(5);
    t.ExpectOthersReadable({5});
  }
  SECTION("any flipped metadata entry byte: nonce, tag, flags, reserved") {
    const Bytes original = t.f.mem.Snapshot();
    for (uint64_t i = 0; i < 32; ++i) {
      CAPTURE(i);
      t.f.mem.Restore(original);
      t.Flip(EntryAt(130) + i, 0x02);
      t.ExpectBlockCorrupt(130);
    }
    t.ExpectOthersReadable({130});
  }
  SECTION("two blocks swapped (data and entries)") {
    const Bytes d3 = data_page(3), d7 = data_page(7), e3 = entry(3), e7 = entry(7);
    t.f.mem.RawWrite(DataOffset(3), d7);
    t.f.mem.RawWrite(DataOffset(7), d3);
    t.f.mem.RawWrite(EntryAt(3), e7);
    t.f.mem.RawWrite(EntryAt(7), e3);
    t.ExpectBlockCorrupt(3);
    t.ExpectBlockCorrupt(7);
    t.ExpectOthersReadable({3, 7});
  }
  SECTION("blocks moved across groups") {
    const Bytes d1 = data_page(1), e1 = entry(1);
    t.f.mem.RawWrite(DataOffset(129), d1);
    t.f.mem.RawWrite(EntryAt(129), e1);
    t.ExpectBlockCorrupt(129);
  }
  SECTION("two entries swapped") {
    const Bytes e3 = entry(3), e7 = entry(7);
    t.f.mem.RawWrite(EntryAt(3), e7);
    t.f.mem.RawWrite(EntryAt(7), e3);
    t.ExpectBlockCorrupt(3);
    t.ExpectBlockCorrupt(7);
  }
  SECTION("a block copied from another file with the same key") {
    TestFile other(/*file_seed=*/5, /*key_seed=*/7);
    REQUIRE(other.content->Write(Pattern(10 * kB, 0, 2), 0).ok());
    t.f.mem.RawWrite(DataOffset(4), other.mem.RawRead(DataOffset(4), kB));
    t.f.mem.RawWrite(EntryAt(4), other.mem.RawRead(EntryAt(4), 32));
    t.ExpectBlockCorrupt(4);
    t.ExpectOthersReadable({4});
  }
  SECTION("cut at a block boundary: the new last block is not FINAL") {
    t.f.mem.RawTruncate(ExpectedBacking(150 * kB));
    auto fc = t.f.Reopen(&t.f.mem);
    CHECK(fc->Size().value() == 150 * kB);  // stat cannot know...
    t.ExpectBlockCorrupt(149);              // ...but reading to the end does
  }
  SECTION("cut inside the final block: its length is in the AAD") {
    t.f.mem.RawTruncate(t.f.mem.RawSize() - 10);
    t.ExpectBlockCorrupt(200);
  }
  SECTION("cut inside a metadata page") {
    t.f.mem.RawTruncate(MetaOffset(128) + 100);
    RequireCorrupt(t.f.Reopen(&t.f.mem)->Size());
  }
  SECTION("a block appended from another file") {
    TestFile other(/*file_seed=*/5, /*key_seed=*/7);
    REQUIRE(other.content->Write(Pattern(202 * kB, 0, 2), 0).ok());
    // Make our final block full first so block 201 would be the next one.
    REQUIRE(t.f.content->Truncate(201 * kB).ok());
    t.plain.resize(201 * kB, 0);
    t.f.mem.RawWrite(EntryAt(201), other.mem.RawRead(EntryAt(201), 32));
    t.f.mem.RawWrite(DataOffset(201), other.mem.RawRead(DataOffset(201), kB));
    t.ExpectBlockCorrupt(200);  // FINAL, but no longer last
    t.ExpectBlockCorrupt(201);  // another file's AAD
  }
  SECTION("a zeroed entry does not make a hole") {
    t.f.mem.RawWrite(EntryAt(9), Bytes(32, 0));
    t.ExpectBlockCorrupt(9);
    t.ExpectOthersReadable({9});
  }
  SECTION("the HOLE bit set on a data block") {
    Bytes e = entry(9);
    e[28] |= format::kEntryHole;
    t.f.mem.RawWrite(EntryAt(9), e);
    t.ExpectBlockCorrupt(9);
  }
  SECTION("the FINAL bit set on an inner block") {
    Bytes e = entry(9);
    e[28] |= format::kEntryFinal;
    t.f.mem.RawWrite(EntryAt(9), e);
    t.ExpectBlockCorrupt(9);
  }
  SECTION("a zeroed data page") {
    t.f.mem.RawWrite(DataOffset(11), Bytes(kB, 0));
    t.ExpectBlockCorrupt(11);
    t.ExpectOthersReadable({11});
  }
  SECTION("an entry after FINAL") {
    t.f.mem.RawWrite(EntryAt(201), entry(200));
    Bytes buf;
    RequireCorrupt(ReadRange(*t.f.Reopen(&t.f.mem), 200 * kB, 100, &buf));
    t.ExpectOthersReadable({200});
  }
  SECTION("a hole entry moved to another position") {
    TestFile g;
    REQUIRE(g.content->Truncate(10 * kB).ok());
    g.mem.RawWrite(EntryAt(3), g.mem.RawRead(EntryAt(4), 32));
    Bytes buf;
    RequireCorrupt(ReadRange(*g.Reopen(&g.mem), 3 * kB, 10, &buf));
    REQUIRE(ReadRange(*g.Reopen(&g.mem), 4 * kB, 10, &buf).ok());
  }
  SECTION("a damaged block is refused for merging too; a full overwrite heals it") {
    t.Flip(DataOffset(5) + 7);
    RequireCorrupt(t.f.content->Write(AsBytes("xx"), 5 * kB + 1));
    REQUIRE(t.f.content->Write(Pattern(kB, 5 * kB, 1), 5 * kB).ok());
    t.ExpectOthersReadable({});
  }
}

// ---------------------------------------------------------------------------------------------
// I/O failures (FaultyBackingFile).

TEST_CASE("ENOSPC during an append leaves the file as it was", "[fs][content][faults]") {
  TestFile f;
  const Bytes before = Pattern(10000, 0, 4);
  REQUIRE(f.content->Write(before, 0).ok());
  fakes::FaultyBackingFile faulty(&f.mem);
  auto fc = f.Reopen(&faulty);

  SECTION("disk full part-way through the data pages") {
    faulty.SetCapacity(f.mem.RawSize() + 6000);
    Status st = fc->Write(Pattern(1 << 20), 10000);
    REQUIRE_FALSE(st.ok());
    CHECK(st.code() == Code::kIo);
    CHECK(st.error().sys_errno() == ENOSPC);
  }
  SECTION("the metadata write fails after the data went out") {
    faulty.FailWritesAfter(1, ENOSPC, /*short_write=*/false, /*fail_calls=*/1);
    REQUIRE(fc->Write(Pattern(3000), 9000).code() == Code::kIo);
  }
  SECTION("a short write then ENOSPC") {
    faulty.FailWritesAfter(0, ENOSPC, /*short_write=*/true, /*fail_calls=*/1);
    REQUIRE(fc->Write(Pattern(50), 9990).code() == Code::kIo);
  }
  SECTION("a sparse extension by Truncate runs out of space for metadata pages") {
    faulty.SetCapacity(f.mem.RawSize() + 20 * format::kGroupSize);
    REQUIRE(fc->Truncate(uint64_t{1} << 30).code() == Code::kIo);
  }
  faulty.Heal();
  CHECK(fc->Size().value() == before.size());
  CHECK(f.mem.RawSize() == ExpectedBacking(before.size()));
  CHECK(f.ReadAll() == before);
  // And the file still takes writes.
  REQUIRE(fc->Write(AsBytes("more"), 10000).ok());
  CHECK(fc->Size().value() == 10004);
}

TEST_CASE("an extension the backing filesystem cannot hold fails at once", "[fs][content][faults]") {
  TestFile f;
  const Bytes before = Pattern(5000, 0, 5);
  REQUIRE(f.content->Write(before, 0).ok());
  fakes::FaultyBackingFile faulty(&f.mem);
  auto fc = f.Reopen(&faulty);
  faulty.FailTruncate(EFBIG);  // like ext4 for sizes past 16 TiB
  f.mem.ResetCounters();
  Status st = fc->Truncate(uint64_t{1} << 50);
  REQUIRE(st.code() == Code::kIo);
  CHECK(st.error().sys_errno() == EFBIG);
  st = fc->Write(AsBytes("x"), uint64_t{1} << 50);
  REQUIRE(st.code() == Code::kIo);
  CHECK(st.error().sys_errno() == EFBIG);
  CHECK(f.mem.write_calls() == 0);  // refused before any hole entry was sealed
  faulty.Heal();
  CHECK(f.ReadAll() == before);
}

TEST_CASE("a failed overwrite keeps every byte outside the written range", "[fs][content][faults]") {
  TestFile f;
  Bytes model = Pattern(20 * kB, 0, 6);
  REQUIRE(f.content->Write(model, 0).ok());
  fakes::FaultyBackingFile faulty(&f.mem);
  auto fc = f.Reopen(&faulty);
  // Blocks 3..7 partially: 3 and 7 keep some old bytes; 4..6 are fully covered.
  const uint64_t off = 3 * kB + 100;
  const uint64_t len = 4 * kB;
  for (uint64_t ok_calls : {0, 1}) {
    CAPTURE(ok_calls);
    faulty.FailWritesAfter(ok_calls, EIO, /*short_write=*/true, /*fail_calls=*/1);
    REQUIRE(fc->Write(Pattern(len, off, 7), off).code() == Code::kIo);
    faulty.Heal();
    auto check = f.Reopen(&f.mem);
    for (uint64_t b : {0, 1, 2, 3, 7, 8, 19}) {
      Bytes buf;
      REQUIRE(ReadRange(*check, b * kB, kB, &buf).ok());
      REQUIRE(std::equal(buf.begin(), buf.end(), model.begin() + b * kB));
    }
  }
}

TEST_CASE("a failed shrink leaves the file as it was", "[fs][content][faults]") {
  TestFile f;
  const Bytes before = Pattern(3 * kB + 500, 0, 8);
  REQUIRE(f.content->Write(before, 0).ok());
  fakes::FaultyBackingFile faulty(&f.mem);
  auto fc = f.Reopen(&faulty);
  SECTION("ftruncate fails") { faulty.FailTruncate(EIO); }
  SECTION("the metadata write fails") { faulty.FailWritesAfter(1, EIO, false, 1); }
  REQUIRE(fc->Truncate(kB + 10).code() == Code::kIo);
  faulty.Heal();
  CHECK(f.ReadAll() == before);
}

TEST_CASE("read errors pass the errno through and hand out nothing", "[fs][content][faults]") {
  TestFile f;
  REQUIRE(f.content->Write(Pattern(3 * kB), 0).ok());
  fakes::FaultyBackingFile faulty(&f.mem);
  auto fc = f.Reopen(&faulty);
  faulty.FailReads(EIO);
  Bytes buf;
  Status st = ReadRange(*fc, 0, 3 * kB, &buf);
  REQUIRE(st.code() == Code::kIo);
  CHECK(st.error().sys_errno() == EIO);
  faulty.Heal();
  faulty.FailSize(ENOENT);
  fc->ForgetBackingSize();  // the size is known from the read above; ask the backing file again
  CHECK(fc->Size().error().sys_errno() == ENOENT);
}

TEST_CASE("the backing size is asked once, until the size changes or something fails",
          "[fs][content][faults]") {
  TestFile f;
  REQUIRE(f.content->Write(Pattern(3 * kB), 0).ok());
  fakes::FaultyBackingFile faulty(&f.mem);
  auto fc = f.Reopen(&faulty);
  CHECK(fc->Size().value() == 3 * kB);  // asks the backing file
  faulty.FailSize(ENOENT);              // from now on it would fail
  Bytes buf;
  REQUIRE(ReadRange(*fc, kB, kB, &buf).ok());  // reads and overwrites inside the file: no
  CHECK(buf == Pattern(kB, kB));
  REQUIRE(fc->Write(Pattern(kB, 0, 5), 0).ok());
  CHECK(fc->Size().value() == 3 * kB);
  SECTION("an extending write drops it") {
    REQUIRE(fc->Write(Pattern(kB, 3 * kB), 3 * kB).ok());
    CHECK(fc->Size().error().sys_errno() == ENOENT);
  }
  SECTION("a truncate drops it") {
    REQUIRE(fc->Truncate(kB).ok());
    CHECK(fc->Size().error().sys_errno() == ENOENT);
  }
  SECTION("a failed write drops it") {
    faulty.FailWritesAfter(0, ENOSPC);
    CHECK_FALSE(fc->Write(Pattern(kB, 0, 6), 0).ok());
    CHECK(fc->Size().error().sys_errno() == ENOENT);
  }
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("concurrent readers and a writer on disjoint ranges", "[fs][content][threads]") {
  TestFile f;
  const Bytes base = Pattern(4 * kGroupBytes, 0, 3);
  REQUIRE(f.content->Write(base, 0).ok());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const uint64_t off = (uint64_t(t) * 977 + uint64_t(i) * 4099) % (2 * kGroupBytes);
        Bytes buf(70000);
        auto n = f.content->Read(buf, off);
        if (!n.ok() || !std::equal(buf.begin(), buf.begin() + *n, base.begin() + off)) ++failures;
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 50; ++i) {
      const uint64_t off = 2 * kGroupBytes + uint64_t(i) * 3001;
      if (!f.content->Write(Pattern(5000, off, 3), off).ok()) ++failures;
    }
  });
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
  CHECK(f.ReadAll() == base);  // the writer wrote the same pattern
}

}  // namespace
}  // namespace kmsfs::fs
