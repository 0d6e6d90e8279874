// A structured fuzzer for a running kmsfs-keyd (issue 7, docs/reliability.md §6): random valid
// and invalid request sequences — every operation, fields of the right and wrong types, random
// and mutated CiphertextBlobs, EncryptionContexts and OnBehalfOf, unknown and duplicate fields,
// byte flips and truncations of the JSON, bad frame lengths, pipelined bursts — over the real
// socket. keyd must never crash, answer every well-framed request exactly once with a well-formed
// response carrying its RequestId (Result xor Error{Name, Message}), never return a data key that
// differs from the one it generated for a blob, and stay responsive to a well-behaved client.
// Afterwards its state is intact: a canary blob the fuzzer never touches still decrypts, and the
// audit chain verifies.
// Knobs: KMSFS_KEYD_FUZZ_SECONDS (default 20), KMSFS_KEYD_FUZZ_SEED (default: clock; printed).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "tests/integration/harness.h"

namespace kmsfs::it {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

const std::vector<std::string>& Ops() {
  // Everything in docs/protocol.md §5 except what writes files at client-chosen paths (Backup,
  // ExportAudit) or discards audit history (PruneAudit): the fuzzer runs as root.
  static const std::vector<std::string> kOps = {"CreateKey",
                                                "DescribeKey",
                                                "ListKeys",
                                                "CreateAlias",
                                                "UpdateAlias",
                                                "DeleteAlias",
                                                "ListAliases",
                                                "EnableKey",
                                                "DisableKey",
                                                "ScheduleKeyDeletion",
                                                "CancelKeyDeletion",
                                                "RotateKeyOnDemand",
                                                "EnableKeyRotation",
                                                "DisableKeyRotation",
                                                "GetKeyRotationStatus",
                                                "ListKeyRotations",
                                                "GenerateDataKey",
                                                "GenerateDataKeyWithoutPlaintext",
                                                "Encrypt",
                                                "Decrypt",
                                                "ReEncrypt",
                                                "PutKeyPolicy",
                                                "GetKeyPolicy",
                                                "ListAudit",
                                                "VerifyAudit",
                                                "GetAuditCheckpoint",
                                                "TestAccess",
                                                "Ping",
                                                "Status",
                                                "RetireKeyVersion",
                                                "CancelKeyVersionRetirement",
                                                "ListKeyVersions",
                                                "NoSuchOp",
                                                "ping",
                                                ""};
  return kOps;
}

class Fuzzer {
 public:
  explicit Fuzzer(uint64_t seed) : rng_(seed) {}
  std::mt19937_64& rng() { return rng_; }
  size_t Pick(size_t n) { return static_cast<size_t>(rng_() % n); }
  bool OneIn(size_t n) { return Pick(n) == 0; }

  std::vector<std::string> key_ids;                  // keys the fuzzer created
  std::vector<std::string> blobs;                    // base64 CiphertextBlobs keyd returned
  std::map<std::string, std::string> plain_of_blob;  // blob -> Plaintext, from GenerateDataKey

  std::string RandomText(size_t max_len) {
    static const std::string kAlpha =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/=+.:*?\\\" ";
    std::string s(Pick(max_len + 1), ' ');
    for (auto& c : s) c = kAlpha[Pick(kAlpha.size())];
    if (OneIn(8) && !s.empty()) s[Pick(s.size())] = static_cast<char>(0x80 + Pick(0x40));
    return s;
  }
  std::string Base64(size_t n) {
    static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string raw(n, '\0');
    for (auto& c : raw) c = static_cast<char>(rng_());
    std::string out;
    for (size_t i = 0; i < raw.size(); i += 3) {
      uint32_t v = static_cast<uint8_t>(raw[i]) << 16;
      if (i + 1 < raw.size()) v |= static_cast<uint8_t>(raw[i + 1]) << 8;
      if (i + 2 < raw.size()) v |= static_cast<uint8_t>(raw[i + 2]);
      out += kB64[(v >> 18) & 63];
      out += kB64[(v >> 12) & 63];
      out += i + 1 < raw.size() ? kB64[(v >> 6) & 63] : '=';
      out += i + 2 < raw.size() ? kB64[v & 63] : '=';
    }
    return out;
  }
  json AnyValue(int depth = 0) {
    switch (Pick(depth > 2 ? 6 : 8)) {
      case 0:
        return nullptr;
      case 1:
        return OneIn(2);
      case 2:
        return static_cast<int64_t>(rng_()) >> Pick(64);
      case 3:
        return static_cast<double>(Pick(1000)) / 7.0;
      case 4:
        return RandomText(40);
      case 5:
        return std::string(Pick(40'000), 'x');  // frames stay under kMaxFrame
      case 6: {
        json a = json::array();
        for (size_t i = Pick(4); i > 0; --i) a.push_back(AnyValue(depth + 1));
        return a;
      }
      default: {
        json o = json::object();
        for (size_t i = Pick(4); i > 0; --i) o[RandomText(8)] = AnyValue(depth + 1);
        return o;
      }
    }
  }
  json KeyId() {
    switch (Pick(6)) {
      case 0:
      case 1:
      case 2:
        if (!key_ids.empty()) return key_ids[Pick(key_ids.size())];
        [[fallthrough]];
      case 3:
        return "alias/fuzz" + std::to_string(Pick(4));
      case 4:
        return RandomText(70);
      default:
        return AnyValue();
    }
  }
  json Blob() {
    switch (Pick(6)) {
      case 0:
      case 1:
        if (!blobs.empty()) return blobs[Pick(blobs.size())];
        [[fallthrough]];
      case 2: {
        if (blobs.empty()) return Base64(Pick(200));
        std::string b = blobs[Pick(blobs.size())];  // one symbol changed
        b[Pick(b.size() - 2)] = OneIn(2) ? 'A' : 'z';
        return b;
      }
      case 3:
        return Base64(Pick(300));
      case 4:
        return RandomText(50);
      default:
        return AnyValue();
    }
  }
  json Context() {
    if (OneIn(4)) return AnyValue();
    json c = json::object();
    for (size_t i = Pick(3); i > 0; --i)
      c["k" + std::to_string(Pick(3))] = "v" + std::to_string(Pick(3));
    return c;
  }
  json Params(const std::string& op) {
    json p = json::object();
    auto maybe = [&](const char* field, json v) {
      if (!OneIn(6)) p[field] = std::move(v);
    };
    if (op == "CreateKey") {
      maybe("Description", RandomText(30));
      if (OneIn(5)) p["KeySpec"] = OneIn(2) ? json("SYMMETRIC_DEFAULT") : AnyValue();
      if (OneIn(6)) p["Policy"] = OneIn(2) ? json(RandomText(100)) : AnyValue();
    } else if (op == "CreateAlias" || op == "UpdateAlias" || op == "DeleteAlias") {
      maybe("AliasName", OneIn(4) ? AnyValue() : json("alias/fuzz" + std::to_string(Pick(4))));
      maybe("TargetKeyId", KeyId());
    } else if (op == "GenerateDataKey" || op == "GenerateDataKeyWithoutPlaintext") {
      maybe("KeyId", KeyId());
      if (OneIn(5))
        p["NumberOfBytes"] = OneIn(2) ? json(Pick(2000)) : AnyValue();
      else
        maybe("KeySpec", OneIn(6) ? AnyValue() : json(OneIn(2) ? "AES_256" : "AES_128"));
      if (!OneIn(3)) p["EncryptionContext"] = Context();
    } else if (op == "Encrypt") {
      maybe("KeyId", KeyId());
      maybe("Plaintext", OneIn(5) ? AnyValue() : json(Base64(Pick(5000))));
      if (!OneIn(3)) p["EncryptionContext"] = Context();
    } else if (op == "Decrypt") {
      maybe("CiphertextBlob", Blob());
      if (!OneIn(3)) p["EncryptionContext"] = Context();
      if (OneIn(4)) p["KeyId"] = KeyId();
    } else if (op == "ReEncrypt") {
      maybe("CiphertextBlob", Blob());
      maybe("DestinationKeyId", KeyId());
      if (OneIn(2)) p["SourceEncryptionContext"] = Context();
      if (OneIn(2)) p["DestinationEncryptionContext"] = Context();
    } else if (op == "PutKeyPolicy" || op == "GetKeyPolicy") {
      maybe("KeyId", KeyId());
      maybe("PolicyName", OneIn(5) ? AnyValue() : json("default"));
      if (op == "PutKeyPolicy") maybe("Policy", OneIn(3) ? AnyValue() : json(RandomText(200)));
    } else if (op == "RetireKeyVersion" || op == "CancelKeyVersionRetirement") {
      maybe("KeyId", KeyId());
      maybe("KeyVersion", OneIn(4) ? AnyValue() : json(Pick(4)));
      if (OneIn(3)) p["PendingWindowInDays"] = OneIn(2) ? json(Pick(40)) : AnyValue();
    } else if (op == "ScheduleKeyDeletion") {
      maybe("KeyId", KeyId());
      if (OneIn(2)) p["PendingWindowInDays"] = OneIn(2) ? json(7 + Pick(24)) : AnyValue();
    } else if (op == "EnableKeyRotation") {
      maybe("KeyId", KeyId());
      if (OneIn(2)) p["RotationPeriodInDays"] = OneIn(2) ? json(90 + Pick(10)) : AnyValue();
    } else if (op == "ListKeys" || op == "ListAliases" || op == "ListKeyRotations" ||
               op == "ListAudit") {
      if (op != "ListKeys" && OneIn(2)) p["KeyId"] = KeyId();
      if (OneIn(2)) p["Limit"] = OneIn(3) ? AnyValue() : json(Pick(1002));
      if (OneIn(3)) p["Marker"] = AnyValue();
    } else if (op == "TestAccess") {
      maybe("KeyId", KeyId());
      maybe("Action", OneIn(3) ? AnyValue() : json("kms:Decrypt"));
      if (OneIn(2)) p["Uid"] = OneIn(3) ? AnyValue() : json(Pick(70000));
      if (OneIn(2)) p["Path"] = OneIn(3) ? AnyValue() : json("/" + RandomText(20));
    } else if (op != "Ping" && op != "Status" && op != "ListKeys") {
      maybe("KeyId", KeyId());
    }
    if (OneIn(8)) p[RandomText(10)] = AnyValue();  // unknown field inside Params
    return p;
  }

  // One request: its JSON text, whether it is still well-formed JSON, and its RequestId.
  struct Request {
    std::string text;
    std::string op;
    uint64_t id = 0;
    bool parseable = true;
    json params;
  };
  Request Next(uint64_t id) {
    Request r;
    r.id = id;
    r.op = Ops()[Pick(Ops().size())];
    json req = {{"Op", r.op}, {"RequestId", id}};
    if (!OneIn(10)) req["Params"] = r.params = Params(r.op);
    if (OneIn(6)) {
      json who = {{"Uid", Pick(3) == 0 ? json(Pick(5000)) : json(1000)},
                  {"Gid", 1000},
                  {"Pid", OneIn(4) ? AnyValue() : json(1 + Pick(100000))}};
      if (!OneIn(3)) who["Path"] = OneIn(3) ? AnyValue() : json("/" + RandomText(30));
      req["OnBehalfOf"] = who;
    }
    switch (Pick(14)) {
      case 0:
        req.erase("Op");
        break;
      case 1: {  // a RequestId keyd cannot read
        static const json kBad[] = {"7", -1, 1.5, nullptr, json::array(), json::object()};
        req["RequestId"] = kBad[Pick(6)];
        r.parseable = false;
        break;
      }
      case 2:
        req[RandomText(6) + "X"] = AnyValue();
        break;
      default:
        break;
    }
    // Invalid UTF-8 in strings is replaced here; raw bad bytes come from the flips below.
    r.text = req.dump(-1, ' ', false, json::error_handler_t::replace);
    switch (Pick(16)) {
      case 0:  // a byte flipped
        r.text[Pick(r.text.size())] = static_cast<char>(rng_());
        r.parseable = false;
        break;
      case 1:  // truncated
        r.text.resize(1 + Pick(r.text.size() - 1));
        r.parseable = false;
        break;
      case 2:  // a duplicate key
        r.text.insert(1, "\"Op\":\"Ping\",");
        r.parseable = false;
        break;
      case 3:  // trailing bytes
        r.text += OneIn(2) ? " {}" : "x";
        r.parseable = false;
        break;
      default:
        break;
    }
    return r;
  }

 private:
  std::mt19937_64 rng_;
};

TEST_CASE("random valid and invalid request sequences never crash keyd or get garbage back",
          "[keyd][hostile][fuzz]") {
  const uint64_t seconds = EnvU64("KMSFS_KEYD_FUZZ_SECONDS", 20);
  const uint64_t seed =
      EnvU64("KMSFS_KEYD_FUZZ_SEED",
             static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) %
                 1000000007);
  std::printf("keyd fuzz: KMSFS_KEYD_FUZZ_SEED=%llu for %llus\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seconds));
  std::fflush(stdout);
  Sandbox box;
  auto keyd = box.StartKeyd(KeydArgs({"--frame-timeout", "2"}));
  // The canary: a key and blob the fuzzer never learns about.
  auto canary_key = box.Ctl({"create-key", "--description", "canary"});
  REQUIRE(canary_key.exit_code == 0);
  const std::string canary_b64 = "Y2FuYXJ5";
  auto enc = box.Ctl({"encrypt", "--key-id", canary_key.json["KeyMetadata"]["KeyId"], "--plaintext",
                      canary_b64, "--outfile", box.Path("canary.blob")});
  REQUIRE(enc.exit_code == 0);

  Fuzzer fz(seed);
  for (int i = 0; i < 3; ++i) {
    auto k = box.Ctl({"create-key", "--description", "fuzz"});
    REQUIRE(k.exit_code == 0);
    fz.key_ids.push_back(k.json["KeyMetadata"]["KeyId"]);
  }
  static const std::regex kErrorName("^[A-Za-z0-9]{1,128}$");
  std::vector<std::string> violations;
  std::map<std::string, int> answers;  // "Op -> Ok" / "Op -> ErrorName" counts
  uint64_t requests = 0, frames_bad = 0, reconnects = 0;
  auto client = std::make_unique<RawClient>(box.socket_path());
  uint64_t next_id = 1;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < end && violations.size() < 20) {
    const int kind = static_cast<int>(fz.Pick(40));
    if (kind == 0) {
      // A framing error: a length of 0 or over kMaxFrame. keyd may answer RequestId 0, then
      // closes.
      ++frames_bad;
      client->Send(fz.OneIn(2) ? std::string(4, '\0') : std::string("\x7f\xff\xff\xff", 4));
      if (!client->WaitClosed(milliseconds(5'000))) {
        violations.push_back("a bad frame length did not close the connection");
      }
      client = std::make_unique<RawClient>(box.socket_path());
      ++reconnects;
      continue;
    }
    // A burst of 1..4 pipelined requests.
    std::vector<Fuzzer::Request> burst;
    std::string bytes;
    // A request keyd cannot read may end the connection, so it is always a burst's last.
    for (size_t n = 1 + fz.Pick(fz.OneIn(4) ? 4 : 1); n > 0; --n) {
      burst.push_back(fz.Next(next_id++));
      bytes += Frame(burst.back().text);
      if (!burst.back().parseable) break;
    }
    requests += burst.size();
    if (!client->Send(bytes)) {
      violations.push_back("keyd closed the connection before a request was sent");
      client = std::make_unique<RawClient>(box.socket_path());
      continue;
    }
    for (const auto& req : burst) {
      auto frame = client->ReadFrame(milliseconds(10'000));
      if (!frame) {
        // Only a request keyd cannot read (id 0 answered, then close) ends the conversation.
        if (req.parseable) violations.push_back("no answer to " + req.text.substr(0, 200));
        client = std::make_unique<RawClient>(box.socket_path());
        ++reconnects;
        break;
      }
      json answer = json::parse(*frame, nullptr, false);
      if (!answer.is_object() || !answer.contains("RequestId") ||
          !answer["RequestId"].is_number_unsigned()) {
        violations.push_back("malformed response: " + frame->substr(0, 200));
        break;
      }
      const uint64_t id = answer["RequestId"].get<uint64_t>();
      const bool has_result = answer.contains("Result");
      const bool has_error = answer.contains("Error");
      if (has_result == has_error || answer.size() != 2) {
        violations.push_back("not exactly one of Result/Error: " + frame->substr(0, 200));
      }
      if (has_error) {
        const json& e = answer["Error"];
        if (!e.is_object() || !e.contains("Name") || !e["Name"].is_string() ||
            !std::regex_match(e["Name"].get<std::string>(), kErrorName) || !e.contains("Message") ||
            !e["Message"].is_string()) {
          violations.push_back("malformed Error: " + frame->substr(0, 200));
        }
      }
      if (id == 0 && has_error) {
        // keyd could not read this request at all: it answers id 0 and may close.
        answers[req.op + " -> (unreadable) " + answer["Error"].value("Name", "?")]++;
        if (client->WaitClosed(milliseconds(200))) {
          client = std::make_unique<RawClient>(box.socket_path());
          ++reconnects;
          break;
        }
        continue;
      }
      if (id != req.id && req.parseable) {
        violations.push_back("RequestId " + std::to_string(id) + " for request " +
                             std::to_string(req.id));
        break;
      }
      if (id != req.id) continue;  // a flipped byte changed the id: nothing to compare
      if (has_result) {
        answers[req.op + " -> Ok"]++;
        const json& r = answer["Result"];
        if (!r.is_object()) violations.push_back("Result is not an object");
        // Remember blobs; a blob's data key must come back the same every time.
        if (r.is_object() && r.contains("CiphertextBlob") && r["CiphertextBlob"].is_string()) {
          const std::string blob = r["CiphertextBlob"];
          if (fz.blobs.size() < 64) fz.blobs.push_back(blob);
          if (req.op == "GenerateDataKey" && r.contains("Plaintext")) {
            fz.plain_of_blob[blob] = r["Plaintext"];
          }
        }
        if (req.op == "Decrypt" && req.params.is_object() &&
            req.params.contains("CiphertextBlob") && req.params["CiphertextBlob"].is_string()) {
          auto known = fz.plain_of_blob.find(req.params["CiphertextBlob"]);
          if (known != fz.plain_of_blob.end() && r.value("Plaintext", "") != known->second) {
            violations.push_back("Decrypt returned another data key than GenerateDataKey did");
          }
        }
        if (req.op == "CreateKey" && r.contains("KeyMetadata") && fz.key_ids.size() < 12) {
          fz.key_ids.push_back(r["KeyMetadata"].value("KeyId", ""));
        }
      } else {
        answers[req.op + " -> " + answer["Error"].value("Name", "?")]++;
      }
    }
    if (requests % 200 < burst.size()) {
      // A well-behaved client is served meanwhile.
      if (PingLatency(box.socket_path()) > milliseconds(2'000)) {
        violations.push_back("a Ping took over 2 s");
      }
    }
    if (!keyd->running()) {
      violations.push_back("keyd died");
      break;
    }
  }
  std::printf(
      "keyd fuzz: seed %llu: %llu requests, %llu bad frames, %llu reconnects, %zu kinds "
      "of answer\n",
      static_cast<unsigned long long>(seed), static_cast<unsigned long long>(requests),
      static_cast<unsigned long long>(frames_bad), static_cast<unsigned long long>(reconnects),
      answers.size());
  for (const auto& v : violations) std::printf("keyd fuzz: VIOLATION %s\n", v.c_str());
  CHECK(violations.empty());
  REQUIRE(keyd->running());
  CHECK(requests > 100);
  // Some requests must have succeeded and some failed, or the fuzzer is not reaching keyd's logic.
  size_t ok = 0, err = 0;
  for (const auto& [what, n] : answers) (what.ends_with("-> Ok") ? ok : err) += n;
  CHECK(ok > 0);
  CHECK(err > 0);

  // keyd's state is intact.
  auto dec = box.Ctl({"decrypt", "--ciphertext-blob", "fileb://" + box.Path("canary.blob")});
  INFO(dec.err);
  CHECK(dec.exit_code == 0);
  CHECK(dec.json["Plaintext"] == canary_b64);
  auto verify = box.Ctl({"audit", "verify"});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
  client.reset();
  CHECK(keyd->Stop() == std::optional<int>(0));
  CheckLog(keyd->Log(), {".*"}, {box.root_key_hex()});
}

}  // namespace
}  // namespace kmsfs::it
