#include "fs/core/name_codec.h"

#include <atomic>
#include <cerrno>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/crypto/hash.h"
#include "common/crypto/hkdf.h"
#include "common/crypto/siv.h"
#include "common/format/base64.h"
#include "common/format/name_encoding.h"
#include "tests/catch.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs {
namespace {

using testing::DekFromSeed;
using testing::IdFromSeed;

std::unique_ptr<NameCodec> Codec(uint8_t seed = 4, bool long_names = true) {
  auto c = NameCodec::Create(DekFromSeed(seed), long_names);
  REQUIRE(c.ok());
  return std::move(c).value();
}

// The SIV key the codec derives (format.md §2), for crafting names a honest writer never makes.
crypto::Aes256Siv SivFor(uint8_t seed) {
  auto key = crypto::Hkdf(DekFromSeed(seed).span(), {}, AsBytes("kmsfs/v1/names"), 64);
  return crypto::Aes256Siv::Create(key->span()).value();
}

std::string Craft(uint8_t seed, const format::Id128& dir, std::string_view plain) {
  auto siv = SivFor(seed);
  return format::EncodeName(siv.Seal({ByteSpan(dir)}, AsBytes(plain)).value());
}

TEST_CASE("names round-trip and depend on the directory", "[fs][names]") {
  auto codec = Codec();
  const auto d1 = IdFromSeed(10), d2 = IdFromSeed(11);
  const std::vector<std::string> names = {"a", "notes.txt", "with space", "ünïcödé ✓",
                                          std::string(175, 'x'), "-_.~!#$%&'()*+,;=@[]^`{}",
                                          std::string(1, '\xff')};
  for (const std::string& name : names) {
    CAPTURE(name);
    auto e1 = codec->EncryptName(d1, name);
    REQUIRE(e1.ok());
    CHECK(e1->long_content.empty());
    CHECK(e1->backing_name.size() <= 255);
    CHECK_FALSE(format::IsReservedBackingName(e1->backing_name));
    CHECK(e1->backing_name.find('/') == std::string::npos);
    CHECK(codec->DecryptName(d1, e1->backing_name, "").value() == name);
    // Deterministic (lookup computes it), and different in another directory.
    CHECK(codec->EncryptName(d1, name)->backing_name == e1->backing_name);
    auto e2 = codec->EncryptName(d2, name);
    CHECK(e2->backing_name != e1->backing_name);
    // An entry moved to another directory does not decrypt there.
    CHECK(codec->DecryptName(d2, e1->backing_name, "").error().code() == Code::kCorrupt);
  }
  // Another volume's name key gives other names.
  CHECK(Codec(5)->EncryptName(d1, "a")->backing_name != codec->EncryptName(d1, "a")->backing_name);
}

TEST_CASE("long names use kmsfs.longname.* with a side file", "[fs][names]") {
  auto codec = Codec();
  const auto dir = IdFromSeed(12);
  // 175 bytes encode to exactly 255 characters; 176 do not fit.
  CHECK(codec->EncryptName(dir, std::string(175, 'n'))->long_content.empty());
  for (size_t len : {176, 200, 255}) {
    CAPTURE(len);
    const std::string name(len, 'L');
    auto e = codec->EncryptName(dir, name);
    REQUIRE(e.ok());
    CHECK(e->backing_name.size() == 58);
    CHECK(e->backing_name.rfind("kmsfs.longname.", 0) == 0);
    CHECK(e->long_content.size() > 255);
    CHECK(format::ParseLongName(e->backing_name).ok());
    CHECK(codec->DecryptName(dir, e->backing_name, e->long_content).value() == name);
  }
  auto e = codec->EncryptName(dir, std::string(255, 'L')).value();
  auto other = codec->EncryptName(dir, std::string(254, 'L')).value();

  SECTION("a side file that does not match its entry") {
    CHECK(codec->DecryptName(dir, e.backing_name, other.long_content).error().code() ==
          Code::kCorrupt);
  }
  SECTION("a tampered side file") {
    std::string bad = e.long_content;
    bad[100] = bad[100] == 'A' ? 'B' : 'A';
    CHECK(codec->DecryptName(dir, e.backing_name, bad).error().code() == Code::kCorrupt);
  }
  SECTION("a missing side file body") {
    CHECK(codec->DecryptName(dir, e.backing_name, "").error().code() == Code::kCorrupt);
  }
  SECTION("a long name whose side file is consistent but encrypted for another directory") {
    auto moved = codec->EncryptName(IdFromSeed(13), std::string(255, 'L')).value();
    CHECK(codec->DecryptName(dir, moved.backing_name, moved.long_content).error().code() ==
          Code::kCorrupt);
  }
  SECTION("without the long-names feature they are refused both ways") {
    auto strict = Codec(4, /*long_names=*/false);
    auto r = strict->EncryptName(dir, std::string(200, 'L'));
    CHECK(r.error().code() == Code::kInvalidArgument);
    CHECK(r.error().sys_errno() == ENAMETOOLONG);
    CHECK(strict->DecryptName(dir, e.backing_name, e.long_content).error().code() ==
          Code::kCorrupt);
    CHECK(strict->EncryptName(dir, std::string(175, 'n')).ok());
  }
}

TEST_CASE("unacceptable plaintext names are refused", "[fs][names]") {
  auto codec = Codec();
  const auto dir = IdFromSeed(14);
  for (std::string bad : {std::string(), std::string("."), std::string(".."), std::string("a/b"),
                          std::string("/"), std::string("a\0b", 3)}) {
    auto r = codec->EncryptName(dir, bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kInvalidArgument);
    CHECK(r.error().sys_errno() == EINVAL);
  }
  auto r = codec->EncryptName(dir, std::string(256, 'x'));
  CHECK(r.error().code() == Code::kInvalidArgument);
  CHECK(r.error().sys_errno() == ENAMETOOLONG);
}

TEST_CASE("tampered or hostile backing names are corrupt, never a name", "[fs][names]") {
  auto codec = Codec();
  const auto dir = IdFromSeed(15);
  const std::string good = codec->EncryptName(dir, "report.pdf")->backing_name;

  SECTION("every single-character change") {
    const std::string alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < good.size(); ++i) {
      std::string bad = good;
      bad[i] = alphabet[(alphabet.find(good[i]) + 1) % alphabet.size()];
      auto r = codec->DecryptName(dir, bad, "");
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == Code::kCorrupt);
    }
  }
  SECTION("cut, extended, or not base64url") {
    CHECK(codec->DecryptName(dir, good.substr(0, good.size() - 1), "").error().code() ==
          Code::kCorrupt);
    CHECK(codec->DecryptName(dir, good + "A", "").error().code() == Code::kCorrupt);
    CHECK(codec->DecryptName(dir, "not+base64/url", "").error().code() == Code::kCorrupt);
    CHECK(codec->DecryptName(dir, "AAAA", "").error().code() == Code::kCorrupt);
    CHECK(codec->DecryptName(dir, std::string(400, 'A'), "").error().code() == Code::kCorrupt);
  }
  SECTION("names that authenticate but would leave the directory or confuse the kernel") {
    // Sealed with the real SIV key: only a holder of the name key could write these.
    for (std::string evil : {std::string("."), std::string(".."), std::string("a/b"),
                             std::string("../../etc/passwd"), std::string("x\0y", 3),
                             std::string(256, 'z')}) {
      CAPTURE(evil.size());
      const std::string backing = evil.size() > 255
                                      ? format::Base64UrlEncode(SivFor(4).Seal({ByteSpan(dir)},
                                                                               AsBytes(evil))
                                                                    .value())
                                      : Craft(4, dir, evil);
      auto r = codec->DecryptName(dir, backing, "");
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code() == Code::kCorrupt);
    }
  }
  SECTION("reserved names are not file names") {
    for (auto reserved : {"kmsfs.conf", "kmsfs.dirid", "kmsfs.dirid.tmp", "kmsfs.x"}) {
      CHECK(codec->DecryptName(dir, reserved, "").error().code() == Code::kInvalidArgument);
    }
    CHECK(codec->DecryptName(dir, good, "extra").error().code() == Code::kInvalidArgument);
  }
  SECTION("a symlink target is not a valid name, nor the reverse") {
    const std::string target = codec->EncryptSymlink("report.pdf").value();
    CHECK(codec->DecryptName(dir, target, "").error().code() == Code::kCorrupt);
    CHECK(codec->DecryptSymlink(good).error().code() == Code::kCorrupt);
  }
}

TEST_CASE("symlink targets round-trip and authenticate", "[fs][names][symlink]") {
  auto codec = Codec();
  for (std::string target : {std::string("a"), std::string("../x/y"), std::string("/etc/hosts"),
                             std::string(NameCodec::kMaxSymlinkTarget, 't')}) {
    auto stored = codec->EncryptSymlink(target);
    REQUIRE(stored.ok());
    CHECK(stored->size() <= 4095);
    CHECK(stored->find('/') == std::string::npos);
    CHECK(codec->DecryptSymlink(*stored).value() == target);
    CHECK(Codec(5)->DecryptSymlink(*stored).error().code() == Code::kCorrupt);
  }
  std::string stored = codec->EncryptSymlink("/srv/data").value();
  stored[3] = stored[3] == 'A' ? 'B' : 'A';
  CHECK(codec->DecryptSymlink(stored).error().code() == Code::kCorrupt);
  CHECK(codec->DecryptSymlink("").error().code() == Code::kCorrupt);
  CHECK(codec->DecryptSymlink("!!").error().code() == Code::kCorrupt);
  CHECK(codec->DecryptSymlink(std::string(5000, 'A')).error().code() == Code::kCorrupt);
  CHECK(codec->EncryptSymlink("").error().code() == Code::kInvalidArgument);
  CHECK(codec->EncryptSymlink(std::string("a\0b", 3)).error().code() == Code::kInvalidArgument);
  auto too_long = codec->EncryptSymlink(std::string(NameCodec::kMaxSymlinkTarget + 1, 't'));
  CHECK(too_long.error().sys_errno() == ENAMETOOLONG);
}

TEST_CASE("xattr values round-trip, bound to file and attribute name", "[fs][names][xattr]") {
  auto codec = Codec();
  const auto file = IdFromSeed(20), other_file = IdFromSeed(21);
  const Bytes value = testing::Pattern(300);
  auto stored = codec->EncryptXattr(file, "user.comment", value);
  REQUIRE(stored.ok());
  CHECK(stored->size() == 12 + 300 + 16);
  CHECK(codec->DecryptXattr(file, "user.comment", *stored).value() == value);
  // Random nonces: the same value stores differently each time.
  CHECK(codec->EncryptXattr(file, "user.comment", value).value() != *stored);
  CHECK(codec->DecryptXattr(other_file, "user.comment", *stored).error().code() == Code::kCorrupt);
  CHECK(codec->DecryptXattr(file, "user.other", *stored).error().code() == Code::kCorrupt);
  for (size_t i = 0; i < stored->size(); i += 7) {
    Bytes bad = *stored;
    bad[i] ^= 0x10;
    REQUIRE(codec->DecryptXattr(file, "user.comment", bad).error().code() == Code::kCorrupt);
  }
  CHECK(codec->DecryptXattr(file, "user.comment", Bytes(27)).error().code() == Code::kCorrupt);
  auto empty = codec->EncryptXattr(file, "user.empty", {});
  CHECK(codec->DecryptXattr(file, "user.empty", *empty).value().empty());
  CHECK(codec->EncryptXattr(file, "", value).error().code() == Code::kInvalidArgument);
  CHECK(codec->EncryptXattr(file, std::string(256, 'n'), value).error().code() ==
        Code::kInvalidArgument);
  auto big = codec->EncryptXattr(file, "user.big", Bytes(NameCodec::kMaxXattrValue + 1));
  CHECK(big.error().sys_errno() == E2BIG);
  CHECK(codec->EncryptXattr(file, "user.max", Bytes(NameCodec::kMaxXattrValue))->size() == 65536);
}

TEST_CASE("ConfigMac is HMAC-SHA256 under HKDF(name key, kmsfs/v1/config-mac)", "[fs][names]") {
  auto codec = Codec();
  auto mac_key = crypto::Hkdf(DekFromSeed(4).span(), {}, AsBytes("kmsfs/v1/config-mac"), 32);
  const Bytes data = testing::Pattern(77);
  CHECK(codec->ConfigMac(data) == crypto::HmacSha256(mac_key->span(), data));
  CHECK(Codec(5)->ConfigMac(data) != codec->ConfigMac(data));
  CHECK(NameCodec::Create(crypto::SecretBytes(16)).error().code() == Code::kInvalidArgument);
}

TEST_CASE("the codec may be used from many threads", "[fs][names][threads]") {
  auto codec = Codec();
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const auto dir = IdFromSeed(static_cast<uint8_t>(30 + t));
      for (int i = 0; i < 300; ++i) {
        const std::string name = "file-" + std::to_string(t) + "-" + std::to_string(i);
        auto e = codec->EncryptName(dir, name);
        if (!e.ok() || codec->DecryptName(dir, e->backing_name, "").value() != name) ++failures;
        auto x = codec->EncryptXattr(dir, "user.a", AsBytes(name));
        if (!x.ok() || codec->DecryptXattr(dir, "user.a", *x).value() != Bytes(name.begin(), name.end())) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
}

}  // namespace
}  // namespace kmsfs::fs
