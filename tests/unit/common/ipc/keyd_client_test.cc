#include "common/ipc/keyd_client.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/format/base64.h"
#include "common/ipc/errors.h"
#include "common/ipc/frame.h"
#include "tests/catch.h"
#include "tests/unit/common/ipc/fake_keyd.h"
#include "tests/unit/common/ipc/test_util.h"

namespace kmsfs::ipc {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using testing::Action;
using testing::FakeKeyd;
using testing::MsSince;
using testing::TempDir;

KeydClientOptions FastOptions(milliseconds call_timeout = milliseconds(2000)) {
  KeydClientOptions o;
  o.connect_timeout = milliseconds(500);
  o.call_timeout = call_timeout;
  return o;
}

Action Echo(const Request& req) { return Action::Ok(req, {{"Echo", req.params}}); }

std::string B64(std::string_view s) { return format::Base64Encode(AsBytes(s)); }

TEST_CASE("KeydClient: a call returns keyd's Result", "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  FakeKeyd keyd(dir.File("k.sock"), Echo);
  REQUIRE(keyd.ok());
  KeydClient client(dir.File("k.sock"), FastOptions());

  const OnBehalfOf who{1000, 100, 4242, "/home/a/notes.txt"};
  auto r = client.Call(Op::kDescribeKey, {{"KeyId", "alias/x"}}, &who);
  REQUIRE(r.ok());
  CHECK((*r)["Echo"]["KeyId"] == "alias/x");
  auto seen = keyd.last_request();
  REQUIRE(seen.has_value());
  CHECK(seen->op == Op::kDescribeKey);
  CHECK(seen->request_id >= 1);
  CHECK(seen->on_behalf_of == who);

  auto again = client.Call(Op::kPing, json::object());
  REQUIRE(again.ok());
  CHECK(keyd.last_request()->request_id > seen->request_id);
  CHECK(keyd.requests() == 2);
}

TEST_CASE("KeydClient: error responses become the right Code", "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  FakeKeyd keyd(dir.File("k.sock"), [](const Request& req) {
    const std::string name = req.params.value("Name", "NotFoundException");
    return Action::Fail(req, name, "the thing is not there");
  });
  REQUIRE(keyd.ok());
  KeydClient client(dir.File("k.sock"), FastOptions());

  auto r = client.Call(Op::kDescribeKey, {{"KeyId", "alias/x"}});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kNotFound);
  CHECK(r.error().message() == "NotFoundException: the thing is not there");
  CHECK(ErrorNameOf(r.error()) == "NotFoundException");

  const std::pair<const char*, Code> cases[] = {
      {"DisabledException", Code::kKeyUnavailable},
      {"AccessDeniedException", Code::kPermissionDenied},
      {"InvalidCiphertextException", Code::kCorrupt},
      {"LimitExceededException", Code::kUnavailable},
      {"SomethingNewException", Code::kInternal},
  };
  for (const auto& [name, code] : cases) {
    INFO(name);
    auto e = client.Call(Op::kDecrypt, {{"Name", name}});
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code() == code);
  }

  auto raw = client.Exchange(Op::kDescribeKey, json::object());
  REQUIRE(raw.ok());  // a keyd error is a successful exchange
  REQUIRE_FALSE(raw->ok());
  CHECK(raw->error->name == "NotFoundException");
}

TEST_CASE("KeydClient survives a keyd restart between calls", "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  const std::string path = dir.File("k.sock");
  KeydClient client(path, FastOptions());
  {
    FakeKeyd first(path, Echo);
    REQUIRE(first.ok());
    REQUIRE(client.Call(Op::kPing, json::object()).ok());
  }  // keyd gone; the client still holds the old connection

  SECTION("keyd down: fast kUnavailable, errno kept") {
    const auto start = std::chrono::steady_clock::now();
    auto r = client.Call(Op::kPing, json::object());
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kUnavailable);
    CHECK(r.error().sys_errno() == ECONNREFUSED);
    CHECK(ErrorNameOf(r.error()) == "DependencyTimeoutException");
    CHECK(MsSince(start) < 500);
  }
  SECTION("keyd back: the next call just works, sent exactly once") {
    FakeKeyd second(path, Echo);  // replaces the stale socket
    REQUIRE(second.ok());
    auto r = client.Call(Op::kPing, {{"n", 1}});
    REQUIRE(r.ok());
    CHECK((*r)["Echo"]["n"] == 1);
    CHECK(second.requests() == 1);
  }
}

TEST_CASE("KeydClient: unreachable socket path", "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  KeydClient client(dir.File("nothing.sock"), FastOptions());
  auto r = client.Call(Op::kPing, json::object());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kUnavailable);
  CHECK(r.error().sys_errno() == ENOENT);
  CHECK(ErrnoForError(r.error()) == EHOSTDOWN);
  CHECK(ExitCodeForCode(r.error().code()) == 7);
}

TEST_CASE("KeydClient: a keyd that never answers costs one call_timeout, no retry",
          "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  std::atomic<bool> answer{false};
  FakeKeyd keyd(dir.File("k.sock"), [&](const Request& req) {
    return answer ? Echo(req) : Action::Silent();
  });
  REQUIRE(keyd.ok());
  KeydClient client(dir.File("k.sock"), FastOptions(milliseconds(300)));

  const auto start = std::chrono::steady_clock::now();
  auto r = client.Call(Op::kCreateKey, json::object());
  const auto elapsed = MsSince(start);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kUnavailable);
  CHECK(r.error().sys_errno() == ETIMEDOUT);
  CHECK(r.error().message().find("may or may not have been executed") != std::string::npos);
  CHECK(elapsed >= 295);
  CHECK(elapsed < 1500);
  CHECK(keyd.requests() == 1);  // a CreateKey must not be sent twice

  answer = true;
  auto ok = client.Call(Op::kPing, json::object());
  REQUIRE(ok.ok());
  CHECK(keyd.requests() == 2);
}

TEST_CASE("KeydClient: a call queued behind a hung one is bounded by its own deadline",
          "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  FakeKeyd keyd(dir.File("k.sock"), [](const Request&) { return Action::Silent(); });
  REQUIRE(keyd.ok());
  KeydClient client(dir.File("k.sock"), FastOptions(milliseconds(400)));
  Status first_status;
  std::thread first([&] { first_status = client.Call(Op::kPing, json::object()).status(); });
  std::this_thread::sleep_for(milliseconds(100));
  const auto start = std::chrono::steady_clock::now();
  auto second = client.Call(Op::kPing, json::object());
  const auto elapsed = MsSince(start);
  first.join();
  CHECK_FALSE(first_status.ok());
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().code() == Code::kUnavailable);
  CHECK(elapsed < 700);  // ~300 ms for the lock, then its own connect/send with what is left
}

TEST_CASE("KeydClient: keyd closing after reading the request is not retried", "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  FakeKeyd keyd(dir.File("k.sock"), [](const Request&) { return Action::Close(); });
  REQUIRE(keyd.ok());
  KeydClient client(dir.File("k.sock"), FastOptions());
  auto r = client.Call(Op::kScheduleKeyDeletion, {{"KeyId", "k"}});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kUnavailable);
  CHECK(keyd.requests() == 1);
}

TEST_CASE("KeydClient: protocol violations by keyd are kUnavailable and reset the connection",
          "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  std::atomic<int> mode{0};
  FakeKeyd keyd(dir.File("k.sock"), [&](const Request& req) {
    switch (mode.load()) {
      case 1: {  // announces a frame above the limit
        uint8_t h[4];
        PutU32(h, kMaxFrame + 1);
        return Action::Raw(std::string(reinterpret_cast<char*>(h), 4) + "xx");
      }
      case 2: {  // answers another request
        Request other = req;
        other.request_id += 1000;
        return Action::Ok(other, json::object());
      }
      case 3:  // not JSON
        return Action{Action::kRespond, "not json"};
      default:
        return Echo(req);
    }
  });
  REQUIRE(keyd.ok());
  KeydClient client(dir.File("k.sock"), FastOptions());
  for (int m : {1, 2, 3}) {
    INFO(m);
    mode = m;
    auto r = client.Call(Op::kPing, json::object());
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kUnavailable);
    if (m == 1) CHECK(r.error().message().find("limit") != std::string::npos);
    mode = 0;
    CHECK(client.Call(Op::kPing, json::object()).ok());  // fresh connection, works
  }
}

TEST_CASE("KeydClient: an oversized request is refused locally", "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  FakeKeyd keyd(dir.File("k.sock"), Echo);
  REQUIRE(keyd.ok());
  KeydClient client(dir.File("k.sock"), FastOptions());
  auto r = client.Call(Op::kPutKeyPolicy, {{"Policy", std::string(kMaxFrame, 'p')}});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kInvalidArgument);
  CHECK(keyd.requests() == 0);
  auto bad_obo = OnBehalfOf{1, 1, 1, "relative/path"};
  CHECK(client.Call(Op::kPing, json::object(), &bad_obo).error().code() ==
        Code::kInvalidArgument);
}

TEST_CASE("KeydClient is safe to share between threads", "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  FakeKeyd keyd(dir.File("k.sock"), Echo);
  REQUIRE(keyd.ok());
  KeydClient client(dir.File("k.sock"), FastOptions(milliseconds(5000)));
  constexpr int kThreads = 4, kCalls = 25;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const int tag = t * 1000 + i;
        auto r = client.Call(Op::kPing, {{"Tag", tag}});
        if (r.ok() && (*r)["Echo"]["Tag"] == tag) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(good == kThreads * kCalls);
  CHECK(keyd.requests() == kThreads * kCalls);
}

TEST_CASE("KeydClient checks the server's uid when asked to", "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  FakeKeyd keyd(dir.File("k.sock"), Echo);
  REQUIRE(keyd.ok());
  KeydClientOptions o = FastOptions();
  o.expected_server_uid = ::getuid();
  CHECK(KeydClient(dir.File("k.sock"), o).Call(Op::kPing, json::object()).ok());
  o.expected_server_uid = ::getuid() + 1;
  auto r = KeydClient(dir.File("k.sock"), o).Call(Op::kPing, json::object());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kUnavailable);
  CHECK(r.error().message().find("refusing") != std::string::npos);
}

TEST_CASE("typed envelope helpers", "[ipc][client]") {
  TempDir dir;
  REQUIRE(dir.ok());
  const std::string dek(32, '\x42');
  std::atomic<int> variant{0};
  FakeKeyd keyd(dir.File("k.sock"), [&](const Request& req) {
    const json& p = req.params;
    switch (req.op) {
      case Op::kGenerateDataKey:
        if (p.value("KeySpec", "") != "AES_256") return Action::Fail(req, "ValidationException", "spec");
        if (variant == 1) {
          return Action::Ok(req, {{"Plaintext", B64("short")}, {"CiphertextBlob", B64("blob")},
                                  {"KeyId", "key-1"}});
        }
        if (variant == 2) return Action::Ok(req, {{"Plaintext", B64(dek)}, {"KeyId", "key-1"}});
        return Action::Ok(req, {{"Plaintext", B64(dek)},
                                {"CiphertextBlob", B64("blob:" + p["KeyId"].get<std::string>())},
                                {"KeyId", "key-1"}});
      case Op::kDecrypt: {
        auto blob = format::Base64Decode(p["CiphertextBlob"].get<std::string>());
        if (!blob.ok() || AsChars(*blob) != "blob:alias/data" ||
            p["EncryptionContext"]["kmsfs:file"] != "f1") {
          return Action::Fail(req, "InvalidCiphertextException", "no");
        }
        return Action::Ok(req, {{"Plaintext", B64(dek)}, {"KeyId", "key-1"}});
      }
      case Op::kEncrypt:
        return Action::Ok(req, {{"CiphertextBlob", B64("enc:" + p["Plaintext"].get<std::string>())},
                                {"KeyId", p["KeyId"]}});
      case Op::kReEncrypt:
        return Action::Ok(req, {{"CiphertextBlob", B64("re")},
                                {"SourceKeyId", "key-1"},
                                {"KeyId", p["DestinationKeyId"]}});
      default:
        return Action::Fail(req, "UnsupportedOperationException", "no");
    }
  });
  REQUIRE(keyd.ok());
  KeydClient client(dir.File("k.sock"), FastOptions());
  const EncryptionContext ctx = {{"kmsfs:volume", "v1"}, {"kmsfs:file", "f1"}};
  const OnBehalfOf who{1000, 1000, 77, "/a"};

  auto key = client.GenerateDataKey("alias/data", ctx, &who);
  REQUIRE(key.ok());
  CHECK(key->plaintext.size() == 32);
  CHECK(crypto::ConstantTimeEqual(key->plaintext.span(), AsBytes(dek)));
  CHECK(AsChars(key->ciphertext_blob) == "blob:alias/data");
  CHECK(key->key_id == "key-1");
  auto sent = keyd.last_request();
  CHECK(sent->params["EncryptionContext"]["kmsfs:volume"] == "v1");
  CHECK(sent->on_behalf_of == who);

  auto plain = client.Decrypt(key->ciphertext_blob, ctx, &who);
  REQUIRE(plain.ok());
  CHECK(crypto::ConstantTimeEqual(plain->plaintext.span(), AsBytes(dek)));
  CHECK(plain->key_id == "key-1");

  auto wrong_ctx = client.Decrypt(key->ciphertext_blob, {{"kmsfs:file", "other"}});
  REQUIRE_FALSE(wrong_ctx.ok());
  CHECK(wrong_ctx.error().code() == Code::kCorrupt);

  auto enc = client.Encrypt("alias/app", AsBytes("hi"), {});
  REQUIRE(enc.ok());
  CHECK(AsChars(enc->ciphertext_blob) == "enc:" + B64("hi"));
  CHECK(enc->key_id == "alias/app");
  CHECK_FALSE(keyd.last_request()->params.contains("EncryptionContext"));

  auto re = client.ReEncrypt(key->ciphertext_blob, ctx, "key-2", ctx);
  REQUIRE(re.ok());
  CHECK(re->source_key_id == "key-1");
  CHECK(re->key_id == "key-2");
  CHECK(keyd.last_request()->params["SourceEncryptionContext"] == json(ctx));

  SECTION("a data key of the wrong size is refused") {
    variant = 1;
    auto bad = client.GenerateDataKey("alias/data", ctx);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().code() == Code::kInternal);
  }
  SECTION("a missing field is refused") {
    variant = 2;
    auto bad = client.GenerateDataKey("alias/data", ctx);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().code() == Code::kInternal);
    CHECK(bad.error().message().find("CiphertextBlob") != std::string::npos);
  }
}

}  // namespace
}  // namespace kmsfs::ipc
