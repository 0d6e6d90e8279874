#include "common/format/volume_config.h"

#include <string>

#include "common/format/base64.h"
#include "tests/catch.h"
#include "tests/unit/common/format/test_util.h"

namespace kmsfs::format {
namespace {

using testing::IdFromSeed;
using testing::SampleBlob;
using testing::SampleBlobBytes;
using testing::Unhex;

VolumeConfig SampleConfig() {
  VolumeConfig c;
  c.volume_id = IdFromSeed(0x30);
  c.key_id = "alias/backup";
  c.features = {kFeatureInterleavedMetaV1, kFeatureSivNames, kFeatureLongNames};
  c.name_key_blob = SampleBlobBytes();
  c.created_at = "2026-11-28T18:12:36Z";
  for (size_t i = 0; i < c.mac.size(); ++i) c.mac[i] = uint8_t(0xc0 + i);
  return c;
}

// A config in one line, with each field given as raw JSON text, so tests can break any one.
struct Fields {
  std::string format = "1";
  std::string volume_id = "\"303132333435363738393a3b3c3d3e3f\"";
  std::string key_id = "\"alias/backup\"";
  std::string block_size = "4096";
  std::string features = R"(["interleaved-meta-v1","siv-names","long-names"])";
  std::string name_key_blob = "\"" + Base64Encode(SampleBlobBytes()) + "\"";
  std::string created_at = "\"2026-11-28T18:12:36Z\"";
  std::string mac = "\"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf\"";
  std::string extra;

  // An empty raw value leaves the field out.
  std::string Json() const {
    std::string out = "{";
    auto add = [&out](const char* name, const std::string& raw) {
      if (raw.empty()) return;
      if (out.size() > 1) out += ",";
      out += "\"" + std::string(name) + "\":" + raw;
    };
    add("Format", format);
    add("VolumeId", volume_id);
    add("KeyId", key_id);
    add("BlockSize", block_size);
    add("Features", features);
    add("NameKeyBlob", name_key_blob);
    add("CreatedAt", created_at);
    add("Mac", mac);
    return out + extra + "}";
  }
};

Code ParseCode(const std::string& json) {
  auto r = ParseVolumeConfig(json);
  return r.ok() ? Code::kOk : r.error().code();
}

TEST_CASE("volume config round-trips", "[format][config]") {
  auto text = SerializeVolumeConfig(SampleConfig());
  REQUIRE(text.ok());
  CHECK(text->back() == '\n');
  // Field order as documented.
  CHECK(text->find("\"Format\"") < text->find("\"VolumeId\""));
  CHECK(text->find("\"CreatedAt\"") < text->find("\"Mac\""));
  auto back = ParseVolumeConfig(*text);
  REQUIRE(back.ok());
  CHECK(*back == SampleConfig());
  // The hand-written one-line form means the same.
  auto line = ParseVolumeConfig(Fields().Json());
  REQUIRE(line.ok());
  CHECK(*line == SampleConfig());
  // Whitespace between tokens is JSON's business, not ours.
  CHECK(ParseCode(" \n" + Fields().Json() + "\n\n") == Code::kOk);
}

TEST_CASE("a config from a newer kmsfs fails with a clear message", "[format][config]") {
  Fields f;
  f.format = "2";
  f.extra = ",\"SomethingNew\":true";  // Format is checked before the unknown field
  auto r = ParseVolumeConfig(f.Json());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kFailedPrecondition);
  CHECK(r.error().message().find("newer kmsfs") != std::string::npos);
  f.features = R"(["interleaved-meta-v1","siv-names","future-thing"])";
  f.format = "1";
  f.extra.clear();
  r = ParseVolumeConfig(f.Json());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kFailedPrecondition);
  CHECK(r.error().message().find("\"future-thing\"") != std::string::npos);
}

TEST_CASE("volume config parsing is strict", "[format][config]") {
  auto corrupt = [](const Fields& f) { return ParseCode(f.Json()) == Code::kCorrupt; };
  Fields f;
  SECTION("Format") {
    for (const char* v :
         {"0", "\"1\"", "1.0", "1e0", "-1", "true", "null", "[1]", "18446744073709551616"}) {
      f.format = v;
      CAPTURE(v);
      CHECK(corrupt(f));
    }
  }
  SECTION("VolumeId") {
    for (const char* v :
         {"\"303132333435363738393A3B3C3D3E3F\"", "\"3031\"",
          "\"303132333435363738393a3b3c3d3e3f00\"", "\"00000000000000000000000000000000\"",
          "\"30313233343536373839 a3b3c3d3e3f\"", "303132", "null"}) {
      f.volume_id = v;
      CAPTURE(v);
      CHECK(corrupt(f));
    }
  }
  SECTION("KeyId") {
    for (const char* v :
         {"\"\"", "\"alias/\"", "\"has space\"", "\"alias/a b\"", "7", "\"k\\u0000\""}) {
      f.key_id = v;
      CAPTURE(v);
      CHECK(corrupt(f));
    }
    f.key_id = "\"1234abcd-12ab-34cd-56ef-1234567890ab\"";
    CHECK(ParseCode(f.Json()) == Code::kOk);
  }
  SECTION("BlockSize") {
    for (const char* v : {"8192", "512", "0", "\"4096\"", "4096.0", "-4096"}) {
      f.block_size = v;
      CAPTURE(v);
      CHECK(corrupt(f));
    }
  }
  SECTION("Features") {
    for (const char* v : {R"(["interleaved-meta-v1"])", R"(["siv-names"])", "[]",
                          R"(["interleaved-meta-v1","siv-names","siv-names"])",
                          R"(["interleaved-meta-v1","siv-names",7])", R"("siv-names")",
                          R"(["interleaved-meta-v1","siv-names",["long-names"]])"}) {
      f.features = v;
      CAPTURE(v);
      CHECK(corrupt(f));
    }
    f.features = R"(["siv-names","interleaved-meta-v1"])";  // long-names is optional
    auto r = ParseVolumeConfig(f.Json());
    REQUIRE(r.ok());
    CHECK_FALSE(r->HasFeature(kFeatureLongNames));
  }
  SECTION("NameKeyBlob") {
    WrappedBlob short_key = SampleBlob();
    short_key.ciphertext.resize(16);
    const std::string good = Base64Encode(SampleBlobBytes());
    for (std::string v : {std::string("\"\""), "\"" + good.substr(1) + "\"", "\"" + good + "=\"",
                          "\"" + good + "\\n\"",
                          "\"" + good + "AAAA\"",  // trailing blob bytes
                          "\"" + Base64Encode(*SerializeWrappedBlob(short_key)) + "\"",
                          std::string("\"AAAA\""), std::string("null")}) {
      f.name_key_blob = v;
      CAPTURE(v);
      CHECK(corrupt(f));
    }
  }
  SECTION("CreatedAt") {
    for (const char* v : {"\"2026-11-28\"", "\"2026-11-28 18:12:36Z\"", "\"2026-11-28t18:12:36z\"",
                          "\"2026-02-29T00:00:00Z\"", "\"2026-13-01T00:00:00Z\"",
                          "\"2026-11-28T24:00:00Z\"", "\"2026-11-28T18:12:36\"",
                          "\"2026-11-28T18:12:36.Z\"", "\"2026-11-28T18:12:36.1234567890Z\"",
                          "\"2026-11-28T18:12:36+0100\"", "\"2026-11-28T18:12:36Z \"", "0"}) {
      f.created_at = v;
      CAPTURE(v);
      CHECK(corrupt(f));
    }
    for (const char* v : {"\"2024-02-29T00:00:00Z\"", "\"2026-11-28T18:12:36.123456789+01:00\"",
                          "\"2026-12-31T23:59:60-00:30\""}) {
      f.created_at = v;
      CAPTURE(v);
      CHECK(ParseCode(f.Json()) == Code::kOk);
    }
  }
  SECTION("Mac") {
    for (const char* v :
         {"\"c0c1\"", "\"C0C1C2C3C4C5C6C7C8C9CACBCCCDCECFD0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF\"",
          "\"\"", "null"}) {
      f.mac = v;
      CAPTURE(v);
      CHECK(corrupt(f));
    }
  }
  SECTION("unknown, duplicate and missing fields") {
    f.extra = ",\"Comment\":\"hi\"";
    CHECK(corrupt(f));
    f.extra = ",\"Mac\":\"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf\"";
    CHECK(corrupt(f));  // duplicate, even with the same value
    f.extra = ",\"format\":1";
    CHECK(corrupt(f));  // keys are case-sensitive
    f.extra.clear();
    for (std::string Fields::*field :
         {&Fields::format, &Fields::volume_id, &Fields::key_id, &Fields::block_size,
          &Fields::features, &Fields::name_key_blob, &Fields::created_at, &Fields::mac}) {
      Fields missing;
      missing.*field = "";
      CHECK(corrupt(missing));
    }
  }
  SECTION("not a config at all") {
    for (std::string text :
         {std::string(""), std::string("[]"), std::string("null"), std::string("\"x\""),
          std::string("{"), Fields().Json() + "{}", Fields().Json() + "x",
          "/* c */" + Fields().Json(), std::string("{\"Format\":1}"), std::string(70000, ' '),
          std::string("{\"Format\":1,\"KeyId\":\"\xff\"}")}) {
      CAPTURE(text.substr(0, 40));
      CHECK(ParseCode(text) == Code::kCorrupt);
    }
    std::string deep =
        "{\"Format\":1,\"KeyId\":" + std::string(20000, '[') + std::string(20000, ']') + "}";
    CHECK(ParseCode(deep) == Code::kCorrupt);
  }
}

TEST_CASE("serialize refuses what parse would refuse", "[format][config]") {
  VolumeConfig c = SampleConfig();
  CHECK(ValidateVolumeConfig(c).ok());
  SECTION("format") { c.format = 2; }
  SECTION("zero volume id") { c.volume_id = {}; }
  SECTION("key id") { c.key_id = "a b"; }
  SECTION("block size") { c.block_size = 512; }
  SECTION("unknown feature") { c.features.insert("x"); }
  SECTION("missing feature") { c.features.erase(kFeatureSivNames); }
  SECTION("blob") { c.name_key_blob.pop_back(); }
  SECTION("created at") { c.created_at = "yesterday"; }
  CHECK(SerializeVolumeConfig(c).error().code() == Code::kInvalidArgument);
  CHECK(VolumeConfigMacInput(c).error().code() == Code::kInvalidArgument);
}

TEST_CASE("MAC input is the documented canonical encoding", "[format][config]") {
  auto input = VolumeConfigMacInput(SampleConfig());
  REQUIRE(input.ok());
  Bytes expected = Unhex(
      "4b4d4346"                                    // "KMCF"
      "00000001"                                    // Format
      "303132333435363738393a3b3c3d3e3f"            // VolumeId
      "000c616c6961732f6261636b7570"                // KeyId "alias/backup"
      "00001000"                                    // BlockSize
      "0003"                                        // three features, bytewise ascending:
      "0013696e7465726c65617665642d6d6574612d7631"  // interleaved-meta-v1
      "000a6c6f6e672d6e616d6573"                    // long-names
      "00097369762d6e616d6573"                      // siv-names
      "005a");                                      // NameKeyBlob length 90
  const Bytes blob = SampleBlobBytes();
  expected.insert(expected.end(), blob.begin(), blob.end());
  // CreatedAt: length 20, "2026-11-28T18:12:36Z".
  const Bytes created = Unhex("0014323032362d31312d32385431383a31323a33365a");
  expected.insert(expected.end(), created.begin(), created.end());
  CHECK(*input == expected);

  SECTION("the Mac field itself is not covered") {
    VolumeConfig c = SampleConfig();
    c.mac = {};
    CHECK(*VolumeConfigMacInput(c) == *input);
  }
  SECTION("every other field is") {
    std::vector<VolumeConfig> variants(6, SampleConfig());
    variants[0].volume_id[15] ^= 1;
    variants[1].key_id = "alias/backup2";
    variants[2].features.erase(kFeatureLongNames);
    variants[3].name_key_blob.back() ^= 1;
    variants[4].created_at = "2026-11-28T18:12:37Z";
    variants[5].key_id = "alias/backu";  // shorter: length prefixes keep it distinct
    for (const auto& v : variants) CHECK(*VolumeConfigMacInput(v) != *input);
  }
}

TEST_CASE("RFC 3339 UTC formatting", "[format][config]") {
  CHECK(*Rfc3339Utc(0) == "1970-01-01T00:00:00Z");
  CHECK(*Rfc3339Utc(951782400) == "2000-02-29T00:00:00Z");
  CHECK(*Rfc3339Utc(1798481556) == "2026-12-28T18:12:36Z");
  CHECK(*Rfc3339Utc(253402300799) == "9999-12-31T23:59:59Z");
  CHECK_FALSE(Rfc3339Utc(-1).ok());
  CHECK_FALSE(Rfc3339Utc(253402300800).ok());
  for (int64_t t = 0; t < 253402300799; t += 86400 * 37 + 3607) {
    REQUIRE(IsValidRfc3339(*Rfc3339Utc(t)));
  }
}

}  // namespace
}  // namespace kmsfs::format
