#include "common/ipc/message.h"

#include <string>
#include <vector>

#include "tests/catch.h"

namespace kmsfs::ipc {
namespace {

using nlohmann::json;

TEST_CASE("requests round-trip", "[ipc][message]") {
  Request r;
  r.op = Op::kGenerateDataKey;
  r.request_id = 7;
  r.params = {{"KeyId", "alias/data"},
              {"KeySpec", "AES_256"},
              {"EncryptionContext", {{"kmsfs:volume", "ab"}, {"kmsfs:file", "cd"}}}};
  SECTION("with OnBehalfOf") {
    r.on_behalf_of = OnBehalfOf{1000, 100, 1234, "/dir/file"};
  }
  SECTION("with OnBehalfOf without a path") { r.on_behalf_of = OnBehalfOf{0, 0, 1, ""}; }
  SECTION("without OnBehalfOf") {}
  auto text = SerializeRequest(r);
  REQUIRE(text.ok());
  auto back = ParseRequest(*text);
  REQUIRE(back.ok());
  CHECK(back->op == r.op);
  CHECK(back->request_id == r.request_id);
  CHECK(back->params == r.params);
  CHECK(back->on_behalf_of == r.on_behalf_of);
}

TEST_CASE("the documented request example parses", "[ipc][message]") {
  auto r = ParseRequest(
      R"({"Op":"GenerateDataKey","RequestId":7,"Params":{"KeyId":"k","KeySpec":"AES_256"},)"
      R"("OnBehalfOf":{"Uid":1000,"Gid":1000,"Pid":1234,"Path":"/dir/file"}})");
  REQUIRE(r.ok());
  CHECK(r->op == Op::kGenerateDataKey);
  CHECK(r->on_behalf_of->path == "/dir/file");
  auto no_params = ParseRequest(R"({"Op":"Ping","RequestId":0})");
  REQUIRE(no_params.ok());
  CHECK(no_params->params == json::object());
}

TEST_CASE("responses round-trip", "[ipc][message]") {
  Response r;
  r.request_id = 9;
  SECTION("result") { r.result = {{"KeyId", "k"}, {"CiphertextBlob", "AAAA"}}; }
  SECTION("error") { r.error = ErrorInfo{"NotFoundException", "no such key"}; }
  auto text = SerializeResponse(r);
  REQUIRE(text.ok());
  auto back = ParseResponse(*text);
  REQUIRE(back.ok());
  CHECK(back->request_id == 9);
  CHECK(back->error == r.error);
  if (r.ok()) CHECK(back->result == r.result);
}

struct BadCase {
  const char* name;
  std::string text;
  const char* expect;  // substring of the error message
};

std::string Nested(int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += "[";
  for (int i = 0; i < depth; ++i) s += "]";
  return s;
}

std::string WithObo(const std::string& obo) {
  return R"({"Op":"Decrypt","RequestId":1,"OnBehalfOf":)" + obo + "}";
}

TEST_CASE("malformed requests are rejected, each with the field named", "[ipc][message]") {
  const std::vector<BadCase> cases = {
      {"empty", "", "malformed JSON"},
      {"not json", "hello", "malformed JSON"},
      {"array", "[]", "not a JSON object"},
      {"string", R"("Ping")", "not a JSON object"},
      {"truncated", R"({"Op":"Ping","RequestId":1)", "malformed JSON"},
      {"trailing data", R"({"Op":"Ping","RequestId":1} {})", "malformed JSON"},
      {"comment", R"({"Op":"Ping",/*x*/"RequestId":1})", "malformed JSON"},
      {"invalid UTF-8", "{\"Op\":\"Ping\",\"RequestId\":1,\"Params\":{\"a\":\"\xff\"}}",
       "malformed JSON"},
      {"duplicate top-level key", R"({"Op":"Ping","RequestId":1,"Op":"Decrypt"})",
       "duplicate key \"Op\""},
      {"duplicate nested key", R"({"Op":"Ping","RequestId":1,"Params":{"a":1,"a":2}})",
       "duplicate key \"a\""},
      {"too deep", R"({"Op":"Ping","RequestId":1,"Params":{"a":)" + Nested(40) + "}}",
       "nested deeper"},
      {"Op missing", R"({"RequestId":1})", "Op is missing"},
      {"Op unknown", R"({"Op":"Nope","RequestId":1})", "Op is not a known operation"},
      {"Op wrong case", R"({"Op":"ping","RequestId":1})", "Op is not a known operation"},
      {"Op not a string", R"({"Op":5,"RequestId":1})", "Op must be a string"},
      {"RequestId missing", R"({"Op":"Ping"})", "RequestId is missing"},
      {"RequestId negative", R"({"Op":"Ping","RequestId":-1})", "RequestId must be"},
      {"RequestId fraction", R"({"Op":"Ping","RequestId":1.5})", "RequestId must be"},
      {"RequestId float", R"({"Op":"Ping","RequestId":1.0})", "RequestId must be"},
      {"RequestId exponent", R"({"Op":"Ping","RequestId":1e3})", "RequestId must be"},
      {"RequestId too big", R"({"Op":"Ping","RequestId":18446744073709551616})",
       "RequestId must be"},
      {"RequestId string", R"({"Op":"Ping","RequestId":"7"})", "RequestId must be"},
      {"RequestId null", R"({"Op":"Ping","RequestId":null})", "RequestId must be"},
      {"unknown field", R"({"Op":"Ping","RequestId":1,"Extra":true})", "unknown field \"Extra\""},
      {"Params array", R"({"Op":"Ping","RequestId":1,"Params":[]})", "Params must be an object"},
      {"Params null", R"({"Op":"Ping","RequestId":1,"Params":null})", "Params must be an object"},
      {"OnBehalfOf not object", WithObo("[]"), "OnBehalfOf is not an object"},
      {"Uid missing", WithObo(R"({"Gid":1,"Pid":1})"), "OnBehalfOf.Uid is missing"},
      {"Gid missing", WithObo(R"({"Uid":1,"Pid":1})"), "OnBehalfOf.Gid is missing"},
      {"Pid missing", WithObo(R"({"Uid":1,"Gid":1})"), "OnBehalfOf.Pid is missing"},
      {"Uid negative", WithObo(R"({"Uid":-1,"Gid":1,"Pid":1})"), "OnBehalfOf.Uid"},
      {"Uid (uid_t)-1", WithObo(R"({"Uid":4294967295,"Gid":1,"Pid":1})"), "OnBehalfOf.Uid"},
      {"Gid string", WithObo(R"({"Uid":1,"Gid":"1","Pid":1})"), "OnBehalfOf.Gid"},
      {"Pid zero", WithObo(R"({"Uid":1,"Gid":1,"Pid":0})"), "OnBehalfOf.Pid"},
      {"Pid too big", WithObo(R"({"Uid":1,"Gid":1,"Pid":2147483648})"), "OnBehalfOf.Pid"},
      {"Path not string", WithObo(R"({"Uid":1,"Gid":1,"Pid":1,"Path":1})"), "OnBehalfOf.Path"},
      {"Path relative", WithObo(R"({"Uid":1,"Gid":1,"Pid":1,"Path":"a/b"})"), "OnBehalfOf.Path"},
      {"Path dotdot", WithObo(R"({"Uid":1,"Gid":1,"Pid":1,"Path":"/a/../b"})"),
       "OnBehalfOf.Path"},
      {"Path NUL", WithObo(R"({"Uid":1,"Gid":1,"Pid":1,"Path":"/a\u0000b"})"),
       "OnBehalfOf.Path"},
      {"OnBehalfOf extra", WithObo(R"({"Uid":1,"Gid":1,"Pid":1,"Cap":1})"),
       "unknown field OnBehalfOf.\"Cap\""},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = ParseRequest(c.text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kInvalidArgument);
    CHECK(r.error().message().find(c.expect) != std::string::npos);
  }
}

TEST_CASE("malformed responses are rejected", "[ipc][message]") {
  const std::vector<BadCase> cases = {
      {"neither", R"({"RequestId":1})", "exactly one of Result and Error"},
      {"both", R"({"RequestId":1,"Result":{},"Error":{"Name":"X","Message":""}})",
       "exactly one of Result and Error"},
      {"RequestId missing", R"({"Result":{}})", "RequestId is missing"},
      {"Result not object", R"({"RequestId":1,"Result":[]})", "Result must be an object"},
      {"Error not object", R"({"RequestId":1,"Error":"NotFound"})", "Error is not an object"},
      {"Error.Name missing", R"({"RequestId":1,"Error":{"Message":""}})", "Error.Name is missing"},
      {"Error.Message missing", R"({"RequestId":1,"Error":{"Name":"X"}})",
       "Error.Message is missing"},
      {"Error.Name with a space", R"({"RequestId":1,"Error":{"Name":"Not Found","Message":""}})",
       "Error.Name must be"},
      {"Error.Name empty", R"({"RequestId":1,"Error":{"Name":"","Message":""}})",
       "Error.Name must be"},
      {"Error extra", R"({"RequestId":1,"Error":{"Name":"X","Message":"","Code":3}})",
       "unknown field Error.\"Code\""},
      {"unknown field", R"({"RequestId":1,"Result":{},"Warnings":[]})", "unknown field"},
      {"duplicate", R"({"RequestId":1,"Result":{},"RequestId":2})", "duplicate key"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = ParseResponse(c.text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kInvalidArgument);
    CHECK(r.error().message().find(c.expect) != std::string::npos);
  }
}

TEST_CASE("parse errors never quote values, which may be secrets", "[ipc][message]") {
  const std::string secret = "c2VjcmV0LWtleS1ieXRlcw==";
  for (const std::string& text : {
           R"({"Op":"Decrypt","RequestId":1,"Params":{"Plaintext":")" + secret + R"("} x)",
           R"({"Op":"Decrypt","RequestId":1,"Params":{"Plaintext":")" + secret + R"(x)",
           R"({"Op":")" + secret + R"(","RequestId":1})",
       }) {
    auto r = ParseRequest(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message().find("c2VjcmV0") == std::string::npos);
  }
}

TEST_CASE("ParseRequest reports the RequestId even when it rejects", "[ipc][message]") {
  uint64_t id = 99;
  CHECK_FALSE(ParseRequest(R"({"Op":"Nope","RequestId":41})", &id).ok());
  CHECK(id == 41);
  CHECK_FALSE(ParseRequest(R"({"Op":"Nope"})", &id).ok());
  CHECK(id == 0);
}

TEST_CASE("Serialize refuses what would not parse back, without throwing", "[ipc][message]") {
  Request r;
  SECTION("Params not an object") {
    r.params = json::array();
    CHECK(SerializeRequest(r).error().code() == Code::kInvalidArgument);
  }
  SECTION("a string that is not UTF-8") {
    r.params = {{"a", std::string("\xff\xfe")}};
    CHECK(SerializeRequest(r).error().code() == Code::kInvalidArgument);
  }
  SECTION("bad OnBehalfOf") {
    r.on_behalf_of = OnBehalfOf{1, 1, 1, "/a/"};
    CHECK(SerializeRequest(r).error().code() == Code::kInvalidArgument);
    r.on_behalf_of = OnBehalfOf{1, 1, 0, ""};
    CHECK(SerializeRequest(r).error().code() == Code::kInvalidArgument);
  }
  SECTION("bad error name") {
    Response resp;
    resp.error = ErrorInfo{"Not Found", "x"};
    CHECK(SerializeResponse(resp).error().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("canonical volume paths", "[ipc][message]") {
  for (const char* good : {"/", "/a", "/a/b", "/a.b/..c/...", "/\xc3\xa9t\xc3\xa9"}) {
    INFO(good);
    CHECK(IsCanonicalVolumePath(good));
  }
  for (const char* bad : {"", "a", "a/b", "//", "/a/", "/a//b", "/./a", "/a/.", "/a/../b", "/..",
                          "/\xff"}) {
    INFO(bad);
    CHECK_FALSE(IsCanonicalVolumePath(bad));
  }
  CHECK_FALSE(IsCanonicalVolumePath(std::string_view("/a\0b", 4)));
  CHECK(IsCanonicalVolumePath("/" + std::string(kMaxPathLen - 1, 'a')));
  CHECK_FALSE(IsCanonicalVolumePath("/" + std::string(kMaxPathLen, 'a')));
}

TEST_CASE("ToWirePath replaces each invalid byte with U+FFFD", "[ipc][message]") {
  const std::string r = "\xEF\xBF\xBD";
  CHECK(ToWirePath("/ok/\xc3\xa9") == "/ok/\xc3\xa9");
  CHECK(ToWirePath("/a\xff") == "/a" + r);
  CHECK(ToWirePath("/\xc0\xaf") == "/" + r + r);           // overlong '/'
  CHECK(ToWirePath("/\xed\xa0\x80") == "/" + r + r + r);   // UTF-16 surrogate
  CHECK(ToWirePath("/\xf4\x90\x80\x80") == "/" + r + r + r + r);  // above U+10FFFF
  CHECK(ToWirePath("/\xe2\x82") == "/" + r + r);           // truncated sequence
  CHECK(IsCanonicalVolumePath(ToWirePath("/dir/\xff\xfe")));
}

TEST_CASE("WipeJsonStrings clears every string value", "[ipc][message]") {
  json j = {{"Plaintext", "secret"}, {"Nested", {{"a", json::array({"x", 1, "y"})}}}, {"N", 5}};
  WipeJsonStrings(j);
  CHECK(j["Plaintext"] == "");
  CHECK(j["Nested"]["a"][0] == "");
  CHECK(j["Nested"]["a"][1] == 1);
  CHECK(j["Nested"]["a"][2] == "");
  CHECK(j["N"] == 5);
}

TEST_CASE("every operation name round-trips", "[ipc][message]") {
  CHECK(AllOps().size() == 35);  // + RetireKeyVersion, CancelKeyVersionRetirement, ListKeyVersions
  for (Op op : AllOps()) {
    INFO(OpName(op));
    CHECK(OpFromName(OpName(op)) == op);
  }
  CHECK(OpName(Op::kRotateKeyOnDemand) == "RotateKeyOnDemand");
  CHECK_FALSE(OpFromName("").has_value());
  CHECK_FALSE(OpFromName("Decrypt ").has_value());
}

}  // namespace
}  // namespace kmsfs::ipc
