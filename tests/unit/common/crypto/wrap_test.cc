#include "common/crypto/wrap.h"

#include <string>

#include "common/crypto/random.h"
#include "common/format/wrapped_blob.h"
#include "tests/catch.h"

namespace kmsfs::crypto {
namespace {

using format::EncryptionContext;

MasterKey TestMasterKey(uint8_t seed) {
  auto k = MasterKey::FromBytes(SecretBytes(32));
  REQUIRE(k.ok());
  for (size_t i = 0; i < 32; ++i) k->mutable_span()[i] = uint8_t(seed + 31 * i);
  return std::move(k).value();
}

EncryptionContext FileContext(const std::string& file_hex) {
  return {{format::kContextVolume, "00112233445566778899aabbccddeeff"},
          {format::kContextFile, file_hex}};
}

struct Fixture {
  MasterKey master = TestMasterKey(1);
  Dek dek = RandomKey<DekTag>();
  EncryptionContext ctx = FileContext("0123456789abcdef0123456789abcdef");
  Bytes blob;

  Fixture() {
    auto w = WrapKey(master, "key-1", 3, ctx, dek.span());
    REQUIRE(w.ok());
    blob = std::move(w).value();
  }
};

TEST_CASE("WrapKey/UnwrapKey round-trip and name the key in clear", "[crypto][wrap]") {
  Fixture f;
  auto back = UnwrapKey(f.master, f.blob, f.ctx);
  REQUIRE(back.ok());
  CHECK(ConstantTimeEqual(back->span(), f.dek.span()));

  auto parsed = format::ParseWrappedBlob(f.blob);
  REQUIRE(parsed.ok());
  CHECK(parsed->key_id == "key-1");
  CHECK(parsed->key_version == 3);
  CHECK(parsed->ciphertext.size() == f.dek.span().size());
  auto again = UnwrapKey(f.master, *parsed, f.ctx);
  REQUIRE(again.ok());
  CHECK(ConstantTimeEqual(again->span(), f.dek.span()));

  // The DEK never appears in the blob (it is encrypted), in any alignment.
  const std::string blob_hex = HexEncode(f.blob), dek_hex = HexEncode(f.dek.span());
  CHECK(blob_hex.find(dek_hex.substr(0, 16)) == std::string::npos);

  SECTION("two wraps of the same key differ (fresh salt and nonce)") {
    auto w2 = WrapKey(f.master, "key-1", 3, f.ctx, f.dek.span());
    REQUIRE(w2.ok());
    CHECK(*w2 != f.blob);
    auto p2 = format::ParseWrappedBlob(*w2);
    REQUIRE(p2.ok());
    CHECK(p2->salt != parsed->salt);
    CHECK(p2->nonce != parsed->nonce);
  }
}

TEST_CASE("UnwrapKey rejects every single-bit flip and every truncation of the blob",
          "[crypto][wrap][tamper]") {
  Fixture f;
  size_t parse_failures = 0, auth_failures = 0;
  auto expect_rejected = [&](ByteSpan bytes) {
    auto r = UnwrapKey(f.master, bytes, f.ctx);
    REQUIRE_FALSE(r.ok());
    REQUIRE(r.error().code() == Code::kCorrupt);
    (format::ParseWrappedBlob(bytes).ok() ? auth_failures : parse_failures)++;
  };
  for (size_t bit = 0; bit < f.blob.size() * 8; ++bit) {
    Bytes bad = f.blob;
    bad[bit / 8] ^= uint8_t(1u << (bit % 8));
    expect_rejected(bad);
  }
  for (size_t len = 0; len < f.blob.size(); ++len) expect_rejected(ByteSpan(f.blob).first(len));
  Bytes longer = f.blob;
  longer.push_back(0);
  expect_rejected(longer);
  // Both layers did real work: some flips broke the layout, most only the authentication.
  CHECK(parse_failures > 0);
  CHECK(auth_failures > 0);
  CHECK(parse_failures + auth_failures == f.blob.size() * 8 + f.blob.size() + 1);
}

TEST_CASE("UnwrapKey is bound to the context, the master key and its version", "[crypto][wrap]") {
  Fixture f;
  auto expect_corrupt = [](const Result<SecretBytes>& r) {
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kCorrupt);
  };
  SECTION("another file in the same volume") {
    expect_corrupt(UnwrapKey(f.master, f.blob, FileContext("0123456789abcdef0123456789abcdee")));
  }
  SECTION("another volume") {
    EncryptionContext other = f.ctx;
    other[format::kContextVolume] = "ffeeddccbbaa99887766554433221100";
    expect_corrupt(UnwrapKey(f.master, f.blob, other));
  }
  SECTION("an extra or a missing context entry") {
    EncryptionContext extra = f.ctx;
    extra["purpose"] = "x";
    expect_corrupt(UnwrapKey(f.master, f.blob, extra));
    expect_corrupt(UnwrapKey(f.master, f.blob, EncryptionContext{}));
  }
  SECTION("a different master key") { expect_corrupt(UnwrapKey(TestMasterKey(2), f.blob, f.ctx)); }
  SECTION("the blob relabelled with another key version or key id") {
    auto parsed = format::ParseWrappedBlob(f.blob);
    REQUIRE(parsed.ok());
    format::WrappedBlob relabelled = *parsed;
    relabelled.key_version = 4;
    expect_corrupt(UnwrapKey(f.master, relabelled, f.ctx));
    relabelled = *parsed;
    relabelled.key_id = "key-2";
    expect_corrupt(UnwrapKey(f.master, relabelled, f.ctx));
    relabelled = *parsed;
    relabelled.key_id = "";  // out of the format's bounds: refused, not opened under a short AAD
    expect_corrupt(UnwrapKey(f.master, relabelled, f.ctx));
  }
  SECTION("the error message carries no key bytes") {
    auto r = UnwrapKey(TestMasterKey(2), f.blob, f.ctx);
    REQUIRE_FALSE(r.ok());
    const std::string msg = r.error().ToString();
    CHECK(msg.find(HexEncode(f.dek.span()).substr(0, 8)) == std::string::npos);
    CHECK(msg.find(HexEncode(f.master.span()).substr(0, 8)) == std::string::npos);
  }
}

TEST_CASE("WrapKey validates its inputs", "[crypto][wrap]") {
  const MasterKey master = TestMasterKey(5);
  const EncryptionContext ctx = FileContext("00");
  const Bytes key(32, 1);
  CHECK(WrapKey(master, "k", 1, ctx, {}).status().code() == Code::kInvalidArgument);
  CHECK(WrapKey(master, "k", 1, ctx, Bytes(4097)).status().code() == Code::kInvalidArgument);
  CHECK(WrapKey(master, "", 1, ctx, key).status().code() == Code::kInvalidArgument);
  CHECK(WrapKey(master, std::string(65, 'a'), 1, ctx, key).status().code() ==
        Code::kInvalidArgument);
  CHECK(WrapKey(master, "bad id!", 1, ctx, key).status().code() == Code::kInvalidArgument);
  CHECK(WrapKey(master, "k", 0, ctx, key).status().code() == Code::kInvalidArgument);
  CHECK(WrapKey(master, "k", 1, EncryptionContext{{"", "v"}}, key).status().code() ==
        Code::kInvalidArgument);

  // The largest plaintext the format carries round-trips.
  auto big = WrapKey(master, "k", 1, ctx, Bytes(4096, 7));
  REQUIRE(big.ok());
  auto back = UnwrapKey(master, *big, ctx);
  REQUIRE(back.ok());
  CHECK(back->size() == 4096);
}

}  // namespace
}  // namespace kmsfs::crypto
