#include "keyd/store/records.h"

#include <array>

#include "tests/catch.h"

namespace kmsfs::keyd {
namespace {

KeyRecord SampleKey() {
  KeyRecord r;
  r.key_id = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
  r.description = "payroll volume — ü";
  r.tags = {{"team", "hr"}, {"env", "prod"}};
  r.key_state = KeyState::kPendingDeletion;
  r.creation_date = 1700000000;
  r.deletion_date = 1700600000;
  r.primary_version = 3;
  r.rotation_enabled = true;
  r.rotation_period_in_days = 365;
  r.next_rotation_date = 1731536000;
  r.policy = R"({"Version":"2012-10-17","Statement":[]})";
  return r;
}

TEST_CASE("records round-trip through their JSON encoding", "[store][records]") {
  const KeyRecord k = SampleKey();
  auto text = EncodeKeyRecord(k);
  REQUIRE(text.ok());
  auto back = DecodeKeyRecord(*text);
  REQUIRE(back.ok());
  CHECK(*back == k);

  const KeyVersion v{k.key_id,  7, 1700000001, VersionState::kRetired, RotationType::kOnDemand,
                     1700000002};
  auto vt = EncodeKeyVersion(v);
  REQUIRE(vt.ok());
  CHECK(DecodeKeyVersion(*vt).value() == v);

  const AliasRecord a{"alias/payroll", k.key_id, 5, 6};
  CHECK(DecodeAlias(EncodeAlias(a).value()).value() == a);

  const KdfParams p{{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, 1 << 17, 8, 1};
  CHECK(DecodeKdfParams(EncodeKdfParams(p).value()).value() == p);
}

TEST_CASE("record decoding is strict and never throws", "[store][records]") {
  const std::string good = EncodeKeyRecord(SampleKey()).value();
  CHECK(DecodeKeyRecord("").status().code() == Code::kCorrupt);
  CHECK(DecodeKeyRecord("{not json").status().code() == Code::kCorrupt);
  CHECK(DecodeKeyRecord("[1,2]").status().code() == Code::kCorrupt);
  CHECK(DecodeKeyRecord(R"({"KeyId":"x"})").status().code() == Code::kCorrupt);  // no "v"
  CHECK(DecodeKeyRecord(good.substr(0, good.size() / 2)).status().code() == Code::kCorrupt);

  auto patched = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    REQUIRE(at != std::string::npos);
    s.replace(at, from.size(), to);
    return DecodeKeyRecord(s).status().code();
  };
  CHECK(patched(R"("PrimaryVersion":3)", R"("PrimaryVersion":-1)") == Code::kCorrupt);
  CHECK(patched(R"("PrimaryVersion":3)", R"("PrimaryVersion":4294967296)") == Code::kCorrupt);
  CHECK(patched(R"("PrimaryVersion":3)", R"("PrimaryVersion":"3")") == Code::kCorrupt);
  CHECK(patched(R"("KeyState":"PendingDeletion")", R"("KeyState":"Gone")") == Code::kCorrupt);
  CHECK(patched(R"("v":1)", R"("v":2)") == Code::kFailedPrecondition);    // newer kmsfs wrote it
  CHECK(patched(R"("v":1)", R"("v":1,"FutureField":[1])") == Code::kOk);  // unknown fields ignored
}

TEST_CASE("text that is not UTF-8 is refused, not mangled", "[store][records]") {
  KeyRecord k = SampleKey();
  k.description = std::string("bad \xff\xfe byte");
  CHECK(EncodeKeyRecord(k).status().code() == Code::kInvalidArgument);
}

TEST_CASE("key ids are random v4 UUIDs in canonical form", "[store][records]") {
  std::array<uint8_t, 16> all_ones;
  all_ones.fill(0xff);
  const std::string id = KeyIdFromRandom(all_ones);
  CHECK(id == "ffffffff-ffff-4fff-bfff-ffffffffffff");
  CHECK(IsValidKeyId(id));
  std::array<uint8_t, 16> zeros{};
  CHECK(KeyIdFromRandom(zeros) == "00000000-0000-4000-8000-000000000000");
  CHECK_FALSE(IsValidKeyId("FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF"));  // canonical is lower case
  CHECK_FALSE(IsValidKeyId("ffffffff-ffff-1fff-bfff-ffffffffffff"));  // not v4
  CHECK_FALSE(IsValidKeyId("ffffffff-ffff-4fff-bfff-fffffffffff"));
  CHECK_FALSE(IsValidKeyId("alias/x"));
  CHECK_FALSE(IsValidKeyId("ffffffff/ffff-4fff-bfff-ffffffffffff"));
}

TEST_CASE("alias names follow the KMS syntax; alias/aws/ is reserved", "[store][records]") {
  CHECK(ValidateAliasName("alias/payroll").ok());
  CHECK(ValidateAliasName("alias/team-a/vol_1").ok());
  CHECK(ValidateAliasName("alias/aws").ok());
  CHECK(ValidateAliasName("alias/" + std::string(250, 'x')).ok());
  CHECK(ValidateAliasName("alias/" + std::string(251, 'x')).code() == Code::kInvalidArgument);
  CHECK(ValidateAliasName("alias/").code() == Code::kInvalidArgument);
  CHECK(ValidateAliasName("payroll").code() == Code::kInvalidArgument);
  CHECK(ValidateAliasName("alias/pay roll").code() == Code::kInvalidArgument);
  CHECK(ValidateAliasName("alias/p.x").code() == Code::kInvalidArgument);
  CHECK(ValidateAliasName("Alias/x").code() == Code::kInvalidArgument);
  CHECK(ValidateAliasName("alias/aws/ebs").code() == Code::kInvalidArgument);
}

TEST_CASE("version keys sort in version order and parse back", "[store][records]") {
  const std::string id = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
  CHECK(VersionKey(id, 1) == id + "/00000001");
  CHECK(VersionKey(id, 9) < VersionKey(id, 10));
  CHECK(VersionKey(id, 0xff) < VersionKey(id, 0x100));
  std::string got_id;
  uint32_t got_v = 0;
  REQUIRE(ParseVersionKey(VersionKey(id, 0xdeadbeef), &got_id, &got_v));
  CHECK(got_id == id);
  CHECK(got_v == 0xdeadbeef);
  CHECK_FALSE(ParseVersionKey(id + "/0000001", &got_id, &got_v));
  CHECK_FALSE(ParseVersionKey(id + "/0000000G", &got_id, &got_v));
  CHECK_FALSE(ParseVersionKey("nope/00000001", &got_id, &got_v));
}

TEST_CASE("ValidateKeyRecord enforces limits and state consistency", "[store][records]") {
  KeyRecord k = SampleKey();
  REQUIRE(ValidateKeyRecord(k).ok());
  SECTION("deletion date only while deleting") {
    k.key_state = KeyState::kEnabled;
    CHECK(ValidateKeyRecord(k).code() == Code::kInvalidArgument);
    k.deletion_date.reset();
    CHECK(ValidateKeyRecord(k).ok());
  }
  SECTION("rotation needs a period and a next date") {
    k.next_rotation_date.reset();
    CHECK(ValidateKeyRecord(k).code() == Code::kInvalidArgument);
    k.rotation_enabled = false;
    CHECK(ValidateKeyRecord(k).ok());
    k.rotation_enabled = true;
    k.next_rotation_date = 1;
    k.rotation_period_in_days = 0;
    CHECK(ValidateKeyRecord(k).code() == Code::kInvalidArgument);
  }
  SECTION("sizes") {
    k.description = std::string(8193, 'd');
    CHECK(ValidateKeyRecord(k).code() == Code::kInvalidArgument);
    k = SampleKey();
    k.tags.push_back({"team", "again"});
    CHECK(ValidateKeyRecord(k).code() == Code::kInvalidArgument);
    k = SampleKey();
    k.policy = std::string(32 * 1024 + 1, ' ');
    CHECK(ValidateKeyRecord(k).code() == Code::kInvalidArgument);
  }
}

}  // namespace
}  // namespace kmsfs::keyd
