#include "fs/keysource/keyd_data_key_source.h"

#include <chrono>
#include <string>

#include "common/crypto/wrap.h"
#include "common/format/base64.h"
#include "common/format/encryption_context.h"
#include "tests/catch.h"
#include "tests/unit/common/ipc/fake_keyd.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs {
namespace {

using ipc::testing::Action;
using ipc::testing::FakeKeyd;
using nlohmann::json;

ipc::KeydClientOptions Fast() {
  ipc::KeydClientOptions o;
  o.connect_timeout = std::chrono::milliseconds(500);
  o.call_timeout = std::chrono::milliseconds(2000);
  return o;
}

std::string SampleBlobB64() {
  crypto::MasterKey master;
  auto blob = crypto::WrapKey(master, "k1", 1, {}, Bytes(32, 7));
  return format::Base64Encode(*blob);
}

std::string B64(const Bytes& b) { return format::Base64Encode(b); }

TEST_CASE("KeydDataKeySource asks keyd on behalf of the requester", "[fs][keysource]") {
  testing::TempDir dir;
  const Bytes dek = testing::Pattern(32, 0, 5);
  FakeKeyd keyd(dir.File("k.sock"), [&](const ipc::Request& req) {
    if (req.op == ipc::Op::kGenerateDataKey) {
      return Action::Ok(req, {{"KeyId", "k1"}, {"Plaintext", B64(dek)},
                              {"CiphertextBlob", SampleBlobB64()}});
    }
    return Action::Ok(req, {{"KeyId", "k1"}, {"Plaintext", B64(dek)}});
  });
  REQUIRE(keyd.ok());
  ipc::KeydClient client(dir.File("k.sock"), Fast());
  KeydDataKeySource source(&client);
  const format::EncryptionContext ctx = format::FileDekContext(testing::IdFromSeed(1),
                                                               testing::IdFromSeed(2));
  const Requester alice{1000, 100, 4242, "/alice/notes.txt"};

  auto key = source.GenerateDataKey("alias/data", ctx, alice);
  REQUIRE(key.ok());
  CHECK(crypto::ConstantTimeEqual(key->plaintext.span(), dek));
  CHECK(!key->wrapped.empty());
  auto seen = keyd.last_request();
  REQUIRE(seen.has_value());
  CHECK(seen->op == ipc::Op::kGenerateDataKey);
  CHECK(seen->params["KeyId"] == "alias/data");
  CHECK(seen->params["EncryptionContext"]["kmsfs:file"] == ctx.at("kmsfs:file"));
  REQUIRE(seen->on_behalf_of.has_value());
  CHECK(*seen->on_behalf_of == ipc::OnBehalfOf{1000, 100, 4242, "/alice/notes.txt"});

  auto plain = source.Decrypt(key->wrapped, ctx, alice);
  REQUIRE(plain.ok());
  CHECK(crypto::ConstantTimeEqual(plain->span(), dek));
  CHECK(keyd.last_request()->op == ipc::Op::kDecrypt);

  SECTION("pid 0 is the filesystem itself: no OnBehalfOf") {
    REQUIRE(source.Decrypt(key->wrapped, ctx, Requester{}).ok());
    CHECK_FALSE(keyd.last_request()->on_behalf_of.has_value());
  }
}

TEST_CASE("KeydDataKeySource maps keyd's error names to codes", "[fs][keysource]") {
  testing::TempDir dir;
  std::string name;
  FakeKeyd keyd(dir.File("k.sock"), [&](const ipc::Request& req) {
    if (name == "short") return Action::Ok(req, {{"KeyId", "k1"}, {"Plaintext", B64(Bytes(16))}});
    return Action::Fail(req, name, "no");
  });
  REQUIRE(keyd.ok());
  ipc::KeydClient client(dir.File("k.sock"), Fast());
  KeydDataKeySource source(&client);
  const Requester bob{1001, 100, 77, "/bob/x"};
  const Bytes blob = format::Base64Decode(SampleBlobB64()).value();
  for (auto [n, code] : {std::pair{"AccessDeniedException", Code::kPermissionDenied},
                         std::pair{"DisabledException", Code::kKeyUnavailable},
                         std::pair{"KMSInvalidStateException", Code::kKeyUnavailable},
                         std::pair{"InvalidCiphertextException", Code::kCorrupt},
                         std::pair{"NotFoundException", Code::kNotFound},
                         std::pair{"DependencyTimeoutException", Code::kUnavailable},
                         std::pair{"short", Code::kInternal}}) {
    CAPTURE(n);
    name = n;
    CHECK(source.Decrypt(blob, {}, bob).error().code() == code);
  }
  name = "AccessDeniedException";
  CHECK(source.GenerateDataKey("k1", {}, bob).error().code() == Code::kPermissionDenied);
  keyd.Stop();
  CHECK(source.Decrypt(blob, {}, bob).error().code() == Code::kUnavailable);
}

}  // namespace
}  // namespace kmsfs::fs
