// The stored record format: field names, canonical bytes, chain hash, times.
#include "keyd/audit/record_codec.h"

#include <nlohmann/json.hpp>

#include "tests/catch.h"
#include "tests/unit/keyd/audit/audit_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::SampleRecord;

TEST_CASE("times are RFC 3339 UTC with microseconds and round-trip", "[audit][codec]") {
  CHECK(FormatTime(0) == "1970-01-01T00:00:00.000000Z");
  CHECK(FormatTime(1'704'067'200'000'001) == "2024-01-01T00:00:00.000001Z");
  CHECK(FormatTime(-1) == "1969-12-31T23:59:59.999999Z");
  for (int64_t t :
       {int64_t{0}, int64_t{1'704'067'200'123'456}, int64_t{-1}, int64_t{951'782'400'000'000}}) {
    int64_t back = 42;
    REQUIRE(ParseTime(FormatTime(t), &back));
    CHECK(back == t);
  }
  int64_t ignored;
  CHECK_FALSE(ParseTime("2024-02-30T00:00:00.000000Z", &ignored));  // no Feb 30
  CHECK_FALSE(ParseTime("2024-01-01T00:00:00Z", &ignored));         // µs are mandatory
  CHECK_FALSE(ParseTime("2024-01-01 00:00:00.000000Z", &ignored));
  CHECK_FALSE(ParseTime("2024-01-01T00:00:00.000000+00:00", &ignored));
}

TEST_CASE("a composed record carries every field under its stable name", "[audit][codec]") {
  AuditRecord r = SampleRecord(3);
  r.forwarder = Principal{0, 0, 77, "/usr/bin/kmsfs", "kmsfs@srv.service"};
  crypto::Sha256Digest prev{};
  prev[0] = 0xab;
  crypto::Sha256Digest hash;
  const std::string text =
      ComposeRecord(17, 1'704'067'200'000'001, EncodeRecordBody(r), prev, &hash);
  CHECK(text.find('\n') == std::string::npos);

  const auto j = nlohmann::ordered_json::parse(text);
  std::vector<std::string> names;
  for (const auto& [k, v] : j.items()) names.push_back(k);
  CHECK(names == std::vector<std::string>{"Sequence", "Time", "Operation", "KeyId", "KeyVersion",
                                          "Principal", "Forwarder", "EncryptionContext", "Path",
                                          "Decision", "Sid", "Outcome", "Detail", "PrevHash",
                                          "Hash"});
  CHECK(j["Sequence"] == 17);
  CHECK(j["Time"] == "2024-01-01T00:00:00.000001Z");
  CHECK(j["Principal"]["Uid"] == 1003);
  CHECK(j["Principal"]["Unit"] == "user@1000.service");
  CHECK(j["Forwarder"]["Executable"] == "/usr/bin/kmsfs");
  CHECK(j["EncryptionContext"]["kmsfs:FileId"] == "3");
  CHECK(j["PrevHash"] == DigestHex(prev));
  CHECK(j["Hash"] == DigestHex(hash));

  SECTION("the hash covers the exact text before PrevHash") {
    auto canonical = CanonicalBytes(text);
    REQUIRE(canonical);
    CHECK(canonical->find("PrevHash") == std::string::npos);
    CHECK(ChainHash(prev, *canonical) == hash);
    CHECK(ChainHash(crypto::Sha256Digest{}, *canonical) != hash);  // the link is in it too
  }
  SECTION("decode gives back the fields") {
    auto t = DecodeTrailRecord(text);
    REQUIRE(t.ok());
    CHECK(t->record.sequence == 17);
    CHECK(t->record.time_us == 1'704'067'200'000'001);
    CHECK(t->record.operation == r.operation);
    CHECK(t->record.key_id == r.key_id);
    CHECK(t->record.key_version == r.key_version);
    CHECK(t->record.principal.pid == r.principal.pid);
    REQUIRE(t->record.forwarder);
    CHECK(t->record.forwarder->unit == "kmsfs@srv.service");
    CHECK(t->record.encryption_context == r.encryption_context);
    CHECK(t->record.path == r.path);
    CHECK(t->record.sid == r.sid);
    CHECK(t->record.outcome == r.outcome);
    CHECK(t->record.detail == r.detail);
    CHECK(t->prev_hash == prev);
    CHECK(t->hash == hash);
    CHECK(t->json == text);
  }
  SECTION("no forwarder is null, not absent") {
    r.forwarder.reset();
    const std::string t2 = ComposeRecord(1, 0, EncodeRecordBody(r), prev, &hash);
    CHECK(nlohmann::json::parse(t2)["Forwarder"].is_null());
    CHECK_FALSE(DecodeTrailRecord(t2)->record.forwarder);
  }
}

// What EncodeRecordBody wrote before its direct writer: nlohmann's ordered_json dump. The
// direct writer must give exactly these bytes, or stored records would change shape.
std::string ReferenceBody(const AuditRecord& r) {
  using nlohmann::ordered_json;
  auto principal = [](const Principal& p) {
    ordered_json j = ordered_json::object();
    j["Uid"] = static_cast<uint32_t>(p.uid);
    j["Gid"] = static_cast<uint32_t>(p.gid);
    j["Pid"] = static_cast<int64_t>(p.pid);
    j["Executable"] = p.executable;
    j["Unit"] = p.unit;
    return j;
  };
  ordered_json j = ordered_json::object();
  j["Operation"] = r.operation;
  j["KeyId"] = r.key_id;
  j["KeyVersion"] = r.key_version;
  j["Principal"] = principal(r.principal);
  j["Forwarder"] = r.forwarder ? principal(*r.forwarder) : ordered_json(nullptr);
  ordered_json context = ordered_json::object();
  for (const auto& [k, v] : r.encryption_context) context[k] = v;
  j["EncryptionContext"] = std::move(context);
  j["Path"] = r.path;
  j["Decision"] = r.decision;
  j["Sid"] = r.sid;
  j["Outcome"] = r.outcome;
  j["Detail"] = r.detail;
  const std::string text =
      j.dump(-1, ' ', /*ensure_ascii=*/false, ordered_json::error_handler_t::replace);
  return text.substr(1, text.size() - 2);
}

TEST_CASE("record bodies are byte-identical to nlohmann's encoding", "[audit][codec]") {
  AuditRecord r = SampleRecord(5);
  CHECK(EncodeRecordBody(r) == ReferenceBody(r));
  r.forwarder = Principal{0, 0, -1, "/usr/bin/kmsfs", ""};
  r.principal.uid = static_cast<uid_t>(4294967294u);
  r.key_version = 4294967295u;
  CHECK(EncodeRecordBody(r) == ReferenceBody(r));
  r.encryption_context.clear();
  CHECK(EncodeRecordBody(r) == ReferenceBody(r));
  // Every character class the escaper distinguishes, in every string member.
  std::string nasty = "q\"b\\s/\b\f\n\r\t";
  for (char c = 1; c < 0x20; ++c) nasty += c;
  nasty += "\x7f caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91 end";
  nasty += std::string(1, '\0');
  r.operation = r.key_id = r.path = r.decision = r.sid = r.outcome = r.detail = nasty;
  r.principal.executable = r.principal.unit = nasty;
  r.forwarder->executable = nasty;
  r.encryption_context = {{nasty, nasty}, {"a", ""}, {"", "b"}};
  CHECK(EncodeRecordBody(r) == ReferenceBody(r));
  // Not UTF-8 anywhere: the same U+FFFD replacement as before.
  for (std::string bad : {std::string("\xff"), std::string("a\xc3"), std::string("\xed\xa0\x80")}) {
    AuditRecord b = SampleRecord(2);
    b.detail = bad;
    CHECK(EncodeRecordBody(b) == ReferenceBody(b));
    b = SampleRecord(2);
    b.encryption_context[bad] = "v";
    CHECK(EncodeRecordBody(b) == ReferenceBody(b));
  }
}

TEST_CASE("a path that is not UTF-8 is still recorded", "[audit][codec]") {
  AuditRecord r = SampleRecord(1);
  r.path = std::string("/bad\xff\xfename");
  crypto::Sha256Digest hash;
  const std::string text = ComposeRecord(1, 0, EncodeRecordBody(r), {}, &hash);
  auto t = DecodeTrailRecord(text);
  REQUIRE(t.ok());
  CHECK(t->record.path.find("name") != std::string::npos);
  CHECK(ChainHash({}, *CanonicalBytes(text)) == hash);
}

TEST_CASE("malformed stored records are kCorrupt", "[audit][codec]") {
  crypto::Sha256Digest hash;
  const std::string good = ComposeRecord(1, 0, EncodeRecordBody(SampleRecord(1)), {}, &hash);
  CHECK(DecodeTrailRecord("not json").error().code() == Code::kCorrupt);
  CHECK(DecodeTrailRecord("[]").error().code() == Code::kCorrupt);
  std::string no_path = good;
  no_path.replace(no_path.find("\"Path\""), 6, "\"Pathx\"");
  CHECK(DecodeTrailRecord(no_path).error().code() == Code::kCorrupt);
  CHECK_FALSE(CanonicalBytes(good.substr(0, good.size() - 1)));
  CHECK_FALSE(CanonicalBytes("{}"));
}

TEST_CASE("checkpoints and sequence keys", "[audit][codec]") {
  Checkpoint c{52, {}, 1'704'067'200'000'000};
  c.hash[31] = 7;
  auto back = DecodeCheckpoint(EncodeCheckpoint(c));
  REQUIRE(back.ok());
  CHECK(back->sequence == 52);
  CHECK(back->hash == c.hash);
  CHECK(back->time_us == c.time_us);
  CHECK(DecodeCheckpoint("{\"Sequence\":1}").error().code() == Code::kCorrupt);

  CHECK(SequenceKey(1) < SequenceKey(256));  // byte order is numeric order
  CHECK(SequenceKey(255) < SequenceKey(256));
  uint64_t s = 0;
  REQUIRE(ParseSequenceKey(SequenceKey(0x0102030405060708), &s));
  CHECK(s == 0x0102030405060708);
  CHECK_FALSE(ParseSequenceKey("0000000000000001", &s));  // the interim hex layout
}

}  // namespace
}  // namespace kmsfs::keyd
