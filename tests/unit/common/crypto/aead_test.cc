#include "common/crypto/aead.h"

#include <algorithm>
#include <array>
#include <numeric>
#include <vector>

#include "tests/catch.h"
#include "tests/unit/common/crypto/kat_util.h"

namespace kmsfs::crypto {
namespace {

using testing::Hex;
using testing::LoadKatFile;

bool AllZero(ByteSpan b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t c) { return c == 0; });
}

Bytes Iota(size_t n, uint8_t start) {
  Bytes b(n);
  std::iota(b.begin(), b.end(), start);
  return b;
}

TEST_CASE("AES-256-GCM matches the GCM spec and NIST CAVP vectors", "[crypto][gcm][kat]") {
  const auto records = LoadKatFile("aes256_gcm.txt");
  int passes = 0, fails = 0;
  for (const auto& rec : records) {
    INFO(rec.Label());
    const Bytes key = rec.GetHex("Key"), iv = rec.GetHex("IV"), aad = rec.GetHex("AAD");
    const Bytes ct = rec.GetHex("CT"), tag = rec.GetHex("Tag");
    auto gcm = Aes256Gcm::Create(key);
    REQUIRE(gcm.ok());

    if (rec.Get("Result") == "FAIL") {
      ++fails;
      Bytes out(ct.size(), 0xAA);
      Status s = gcm->Open(iv, aad, ct, tag, out);
      CHECK(s.code() == Code::kCorrupt);
      CHECK(AllZero(out));  // nothing unverified escapes
      continue;
    }
    REQUIRE(rec.Get("Result") == "PASS");
    ++passes;
    const Bytes pt = rec.GetHex("PT");
    REQUIRE(pt.size() == ct.size());

    Bytes got_ct(pt.size()), got_tag(kGcmTagLen);
    REQUIRE(gcm->Seal(iv, aad, pt, got_ct, got_tag).ok());
    CHECK(got_ct == ct);
    CHECK(got_tag == tag);

    Bytes got_pt(ct.size());
    REQUIRE(gcm->Open(iv, aad, ct, tag, got_pt).ok());
    CHECK(got_pt == pt);
  }
  // The file holds 4 spec cases, 4 CAVP encrypt cases and 11 CAVP decrypt cases (5 FAIL).
  CHECK(passes == 14);
  CHECK(fails == 5);
}

// A block shaped like a file block: 64 bytes of plaintext, 41 bytes of AAD.
struct SealedBlock {
  Bytes key = Iota(kGcmKeyLen, 0x40);
  Bytes nonce = Iota(kGcmNonceLen, 0x10);
  Bytes aad = Iota(41, 0xa0);
  Bytes pt = Iota(64, 0x00);
  Bytes ct = Bytes(64);
  Bytes tag = Bytes(kGcmTagLen);
};

SealedBlock MakeSealedBlock(Aes256Gcm& gcm) {
  SealedBlock b;
  REQUIRE(gcm.Seal(b.nonce, b.aad, b.pt, b.ct, b.tag).ok());
  return b;
}

// Opens and asserts kCorrupt with an all-zero output buffer.
void ExpectRejected(Aes256Gcm& gcm, ByteSpan nonce, ByteSpan aad, ByteSpan ct, ByteSpan tag) {
  Bytes out(ct.size(), 0xAA);
  Status s = gcm.Open(nonce, aad, ct, tag, out);
  REQUIRE(s.code() == Code::kCorrupt);
  REQUIRE(AllZero(out));
}

TEST_CASE("AES-256-GCM rejects every single-bit flip and every truncation",
          "[crypto][gcm][tamper]") {
  SealedBlock proto;
  auto gcm = Aes256Gcm::Create(proto.key);
  REQUIRE(gcm.ok());
  const SealedBlock b = MakeSealedBlock(*gcm);
  {
    Bytes out(b.ct.size());
    REQUIRE(gcm->Open(b.nonce, b.aad, b.ct, b.tag, out).ok());
    REQUIRE(out == b.pt);
  }
  int rejected = 0;

  SECTION("ciphertext") {
    for (size_t bit = 0; bit < b.ct.size() * 8; ++bit) {
      Bytes ct = b.ct;
      ct[bit / 8] ^= uint8_t(1u << (bit % 8));
      ExpectRejected(*gcm, b.nonce, b.aad, ct, b.tag);
      ++rejected;
    }
    CHECK(rejected == 512);
  }
  SECTION("tag") {
    for (size_t bit = 0; bit < b.tag.size() * 8; ++bit) {
      Bytes tag = b.tag;
      tag[bit / 8] ^= uint8_t(1u << (bit % 8));
      ExpectRejected(*gcm, b.nonce, b.aad, b.ct, tag);
      ++rejected;
    }
    CHECK(rejected == 128);
  }
  SECTION("nonce") {
    for (size_t bit = 0; bit < b.nonce.size() * 8; ++bit) {
      Bytes nonce = b.nonce;
      nonce[bit / 8] ^= uint8_t(1u << (bit % 8));
      ExpectRejected(*gcm, nonce, b.aad, b.ct, b.tag);
      ++rejected;
    }
    CHECK(rejected == 96);
  }
  SECTION("aad") {
    for (size_t bit = 0; bit < b.aad.size() * 8; ++bit) {
      Bytes aad = b.aad;
      aad[bit / 8] ^= uint8_t(1u << (bit % 8));
      ExpectRejected(*gcm, b.nonce, aad, b.ct, b.tag);
      ++rejected;
    }
    CHECK(rejected == 328);
  }
  SECTION("ciphertext truncated to every shorter length, or extended") {
    for (size_t len = 0; len < b.ct.size(); ++len) {
      ExpectRejected(*gcm, b.nonce, b.aad, ByteSpan(b.ct).first(len), b.tag);
      ++rejected;
    }
    Bytes longer = b.ct;
    longer.push_back(0);
    ExpectRejected(*gcm, b.nonce, b.aad, longer, b.tag);
    CHECK(rejected == 64);
  }
  SECTION("aad truncated or dropped") {
    for (size_t len = 0; len < b.aad.size(); ++len) {
      ExpectRejected(*gcm, b.nonce, ByteSpan(b.aad).first(len), b.ct, b.tag);
    }
  }
  SECTION("a different key") {
    Bytes other_key = proto.key;
    other_key[0] ^= 1;
    auto other = Aes256Gcm::Create(other_key);
    REQUIRE(other.ok());
    ExpectRejected(*other, b.nonce, b.aad, b.ct, b.tag);
  }
  SECTION("the context still works after all those failures") {
    for (int i = 0; i < 3; ++i) ExpectRejected(*gcm, b.nonce, b.aad, b.ct, Bytes(kGcmTagLen));
    Bytes out(b.ct.size());
    REQUIRE(gcm->Open(b.nonce, b.aad, b.ct, b.tag, out).ok());
    CHECK(out == b.pt);
  }
}

TEST_CASE("AES-256-GCM validates sizes and aliasing", "[crypto][gcm]") {
  CHECK(Aes256Gcm::Create(Bytes(31)).status().code() == Code::kInvalidArgument);
  CHECK(Aes256Gcm::Create(Bytes(33)).status().code() == Code::kInvalidArgument);
  CHECK(Aes256Gcm::Create(Bytes(0)).status().code() == Code::kInvalidArgument);
  auto gcm = Aes256Gcm::Create(Bytes(32, 7));
  REQUIRE(gcm.ok());
  Bytes pt(32, 1), ct(32), tag(16), nonce(12), short_tag(15), short_ct(31), long_pt(33);

  CHECK(gcm->Seal(Bytes(11), {}, pt, ct, tag).code() == Code::kInvalidArgument);
  CHECK(gcm->Seal(Bytes(13), {}, pt, ct, tag).code() == Code::kInvalidArgument);
  CHECK(gcm->Seal(nonce, {}, pt, ct, short_tag).code() == Code::kInvalidArgument);
  CHECK(gcm->Seal(nonce, {}, pt, short_ct, tag).code() == Code::kInvalidArgument);
  CHECK(gcm->Open(nonce, {}, ct, Bytes(12), pt).code() == Code::kInvalidArgument);
  CHECK(gcm->Open(nonce, {}, ct, tag, long_pt).code() == Code::kInvalidArgument);

  // Output shifted by one byte over the input: refused, not silently garbled.
  Bytes buf(64, 3);
  CHECK(gcm->Seal(nonce, {}, ByteSpan(buf).first(32), MutableByteSpan(buf).subspan(1, 32), tag)
            .code() == Code::kInvalidArgument);

  SECTION("exact in-place operation is allowed") {
    Bytes data(100, 9);
    const Bytes original = data;
    REQUIRE(gcm->Seal(nonce, AsBytes("hdr"), data, data, tag).ok());
    CHECK(data != original);
    REQUIRE(gcm->Open(nonce, AsBytes("hdr"), data, tag, data).ok());
    CHECK(data == original);
  }
}

TEST_CASE("AES-256-GCM context reuse and Clone give identical results", "[crypto][gcm]") {
  auto a = Aes256Gcm::Create(Iota(32, 1));
  REQUIRE(a.ok());
  auto b = a->Clone();
  REQUIRE(b.ok());
  const Bytes pt = Iota(4096, 5), aad = Iota(41, 9);
  Bytes ct1(pt.size()), ct2(pt.size()), t1(16), t2(16);
  for (uint8_t i = 0; i < 4; ++i) {
    const Bytes nonce(12, i);
    REQUIRE(a->Seal(nonce, aad, pt, ct1, t1).ok());
    REQUIRE(b->Seal(nonce, aad, pt, ct2, t2).ok());
    CHECK(ct1 == ct2);
    CHECK(t1 == t2);
    // Interleave an open on the same context: its decrypt state must not leak into the next seal.
    Bytes back(pt.size());
    REQUIRE(a->Open(nonce, aad, ct1, t1, back).ok());
    CHECK(back == pt);
  }
  SECTION("moved-to object keeps working") {
    Aes256Gcm moved = std::move(*b);
    const Bytes nonce(12, 0);
    REQUIRE(moved.Seal(nonce, aad, pt, ct2, t2).ok());
    REQUIRE(a->Seal(nonce, aad, pt, ct1, t1).ok());
    CHECK(ct1 == ct2);
  }
  SECTION("empty plaintext authenticates the AAD alone (GMAC)") {
    const Bytes nonce(12, 42);
    Bytes tag(16);
    REQUIRE(a->Seal(nonce, aad, {}, {}, tag).ok());
    CHECK(a->Open(nonce, aad, {}, tag, {}).ok());
    Bytes aad2 = aad;
    aad2[40] ^= 0x80;
    CHECK(a->Open(nonce, aad2, {}, tag, {}).code() == Code::kCorrupt);
  }
}

}  // namespace
}  // namespace kmsfs::crypto
