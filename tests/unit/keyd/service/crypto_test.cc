// KmsService data plane: GenerateDataKey*, Encrypt, Decrypt, ReEncrypt; policy with paths and
// contexts; OnBehalfOf.
#include <thread>

#include "tests/unit/keyd/service/service_test_util.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

using testing::Alice;
using testing::B64;
using testing::BlobKey;
using testing::Bob;
using testing::DecodeB64;
using testing::Forwarded;
using testing::Harness;
using testing::Root;
using testing::SinkKind;

const json kCtx = {{"kmsfs:volume", "vol1"}, {"kmsfs:file", "f1"}};

TEST_CASE("GenerateDataKey: plaintext, blob, and a Decrypt round trip", "[service][crypto]") {
  Harness h;
  const std::string id = h.CreateKey();
  json dk =
      h.Ok("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}, {"EncryptionContext", kCtx}});
  CHECK(dk["KeyId"] == id);
  const Bytes plain = DecodeB64(dk["Plaintext"]);
  CHECK(plain.size() == 32);
  CHECK(BlobKey(dk["CiphertextBlob"]) == std::make_pair(id, uint32_t{1}));

  auto rec = h.LastAudit();
  CHECK(rec.operation == "GenerateDataKey");
  CHECK(rec.key_id == id);
  CHECK(rec.key_version == 1);
  CHECK(rec.decision == "Allow");
  CHECK(rec.outcome == "Success");
  CHECK(rec.encryption_context.at("kmsfs:volume") == "vol1");

  json d = h.Ok("Decrypt", {{"CiphertextBlob", dk["CiphertextBlob"]}, {"EncryptionContext", kCtx}});
  CHECK(DecodeB64(d["Plaintext"]) == plain);
  CHECK(d["KeyId"] == id);
  CHECK(d["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT");
  CHECK(h.LastAudit().operation == "Decrypt");
  CHECK(h.LastAudit().outcome == "Success");

  SECTION("other sizes") {
    CHECK(DecodeB64(h.Ok("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_128"}})["Plaintext"])
              .size() == 16);
    CHECK(DecodeB64(h.Ok("GenerateDataKey", {{"KeyId", id}, {"NumberOfBytes", 1}})["Plaintext"])
              .size() == 1);
    CHECK(DecodeB64(h.Ok("GenerateDataKey", {{"KeyId", id}, {"NumberOfBytes", 1024}})["Plaintext"])
              .size() == 1024);
  }
  SECTION("parameter errors name the field and the range") {
    std::string m = h.Fails("GenerateDataKey", {{"KeyId", id}}, "ValidationException");
    CHECK(m.find("KeySpec") != std::string::npos);
    h.Fails("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}, {"NumberOfBytes", 32}},
            "ValidationException");
    m = h.Fails("GenerateDataKey", {{"KeyId", id}, {"NumberOfBytes", 1025}}, "ValidationException");
    CHECK(m.find("1 to 1024") != std::string::npos);
    h.Fails("GenerateDataKey", {{"KeyId", id}, {"NumberOfBytes", 0}}, "ValidationException");
    h.Fails("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_512"}}, "ValidationException");
    h.Fails("GenerateDataKey", {{"KeySpec", "AES_256"}}, "ValidationException");
    h.Fails("GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}, {"EncryptionContext", 3}},
            "ValidationException");
    h.Fails("GenerateDataKey",
            {{"KeyId", id}, {"KeySpec", "AES_256"}, {"EncryptionContext", {{"a", 1}}}},
            "ValidationException");
    h.Fails("GenerateDataKey", {{"KeyId", "alias/none"}, {"KeySpec", "AES_256"}},
            "NotFoundException");
    // Every key use is audited, failures included.
    CHECK(h.LastAudit().outcome == "NotFoundException");
    CHECK(h.LastAudit().key_id == "alias/none");
  }
}

TEST_CASE("GenerateDataKeyWithoutPlaintext", "[service][crypto]") {
  Harness h;
  const std::string id = h.CreateKey();
  json dk = h.Ok("GenerateDataKeyWithoutPlaintext",
                 {{"KeyId", id}, {"KeySpec", "AES_256"}, {"EncryptionContext", kCtx}});
  CHECK_FALSE(dk.contains("Plaintext"));
  CHECK(dk["KeyId"] == id);
  json d = h.Ok("Decrypt", {{"CiphertextBlob", dk["CiphertextBlob"]}, {"EncryptionContext", kCtx}});
  CHECK(DecodeB64(d["Plaintext"]).size() == 32);
  CHECK(h.Audit()[h.Audit().size() - 2].operation == "GenerateDataKeyWithoutPlaintext");
}

TEST_CASE("Encrypt and Decrypt", "[service][crypto]") {
  Harness h;
  const std::string id = h.CreateKey();
  const std::string secret(4096, 's');
  json enc =
      h.Ok("Encrypt", {{"KeyId", id}, {"Plaintext", B64(secret)}, {"EncryptionContext", kCtx}});
  CHECK(enc["KeyId"] == id);
  CHECK(enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT");
  CHECK_FALSE(enc.contains("Plaintext"));
  json dec =
      h.Ok("Decrypt",
           {{"CiphertextBlob", enc["CiphertextBlob"]}, {"EncryptionContext", kCtx}, {"KeyId", id}});
  CHECK(DecodeB64(dec["Plaintext"]) == Bytes(secret.begin(), secret.end()));

  SECTION("Encrypt limits") {
    h.Fails("Encrypt", {{"KeyId", id}, {"Plaintext", B64(std::string(4097, 'x'))}},
            "ValidationException");
    h.Fails("Encrypt", {{"KeyId", id}, {"Plaintext", ""}}, "ValidationException");
    h.Fails("Encrypt", {{"KeyId", id}, {"Plaintext", "not base64!"}}, "ValidationException");
    h.Fails("Encrypt", {{"KeyId", id}}, "ValidationException");
    h.Fails("Encrypt", {{"KeyId", id}, {"Plaintext", B64("x")}, {"EncryptionAlgorithm", "RSA"}},
            "ValidationException");
  }
  SECTION("wrong context, tampering and garbage are all InvalidCiphertextException") {
    const std::string generic = h.Fails("Decrypt",
                                        {{"CiphertextBlob", enc["CiphertextBlob"]},
                                         {"EncryptionContext", {{"kmsfs:volume", "vol2"}}}},
                                        "InvalidCiphertextException");
    h.Fails("Decrypt", {{"CiphertextBlob", enc["CiphertextBlob"]}}, "InvalidCiphertextException");
    Bytes blob = DecodeB64(enc["CiphertextBlob"]);
    blob[blob.size() - 20] ^= 1;
    const std::string tampered = h.Fails(
        "Decrypt", {{"CiphertextBlob", format::Base64Encode(blob)}, {"EncryptionContext", kCtx}},
        "InvalidCiphertextException");
    CHECK(tampered == generic);  // never says which
    h.Fails("Decrypt", {{"CiphertextBlob", "@@@@"}}, "InvalidCiphertextException");
    h.Fails("Decrypt", {{"CiphertextBlob", B64("short")}}, "InvalidCiphertextException");
    h.Fails("Decrypt", json::object(), "ValidationException");
    CHECK(h.LastAudit().operation == "Decrypt");
    CHECK(h.LastAudit().outcome == "ValidationException");
  }
  SECTION("KeyId must match the blob's key") {
    const std::string other = h.CreateKey();
    h.Fails(
        "Decrypt",
        {{"CiphertextBlob", enc["CiphertextBlob"]}, {"EncryptionContext", kCtx}, {"KeyId", other}},
        "IncorrectKeyException");
    h.Fails("Decrypt",
            {{"CiphertextBlob", enc["CiphertextBlob"]},
             {"EncryptionContext", kCtx},
             {"KeyId", "alias/none"}},
            "NotFoundException");
  }
  SECTION("a blob for a key this keyd never had") {
    Harness other;
    const std::string foreign = other.CreateKey();
    json e = other.Ok("Encrypt", {{"KeyId", foreign}, {"Plaintext", B64("x")}});
    h.Fails("Decrypt", {{"CiphertextBlob", e["CiphertextBlob"]}}, "NotFoundException");
  }
}

TEST_CASE("ReEncrypt to another key and to the same key's newest version", "[service][crypto]") {
  Harness h;
  const std::string a = h.CreateKey();
  const std::string b = h.CreateKey();
  json dk =
      h.Ok("GenerateDataKey", {{"KeyId", a}, {"KeySpec", "AES_256"}, {"EncryptionContext", kCtx}});
  const Bytes plain = DecodeB64(dk["Plaintext"]);

  json re = h.Ok("ReEncrypt", {{"CiphertextBlob", dk["CiphertextBlob"]},
                               {"SourceEncryptionContext", kCtx},
                               {"DestinationKeyId", b},
                               {"DestinationEncryptionContext", {{"kmsfs:volume", "vol2"}}}});
  CHECK_FALSE(re.contains("Plaintext"));
  CHECK(re["SourceKeyId"] == a);
  CHECK(re["KeyId"] == b);
  CHECK(re["SourceKeyVersion"] == 1);
  CHECK(re["KeyVersion"] == 1);
  CHECK(BlobKey(re["CiphertextBlob"]).first == b);
  json d = h.Ok("Decrypt", {{"CiphertextBlob", re["CiphertextBlob"]},
                            {"EncryptionContext", {{"kmsfs:volume", "vol2"}}}});
  CHECK(DecodeB64(d["Plaintext"]) == plain);

  // One record per key used.
  auto all = h.Audit();
  REQUIRE(all.size() >= 3);
  const AuditRecord& src = all[all.size() - 3];
  const AuditRecord& dst = all[all.size() - 2];
  CHECK(src.operation == "ReEncrypt");
  CHECK(src.key_id == a);
  CHECK(src.encryption_context.at("kmsfs:volume") == "vol1");
  CHECK(dst.operation == "ReEncrypt");
  CHECK(dst.key_id == b);
  CHECK(dst.encryption_context.at("kmsfs:volume") == "vol2");
  CHECK(src.outcome == "Success");
  CHECK(dst.outcome == "Success");

  SECTION("same key after rotation: the blob moves to the newest version") {
    h.Ok("RotateKeyOnDemand", {{"KeyId", a}});
    h.Ok("RotateKeyOnDemand", {{"KeyId", a}});
    json same = h.Ok("ReEncrypt", {{"CiphertextBlob", dk["CiphertextBlob"]},
                                   {"SourceEncryptionContext", kCtx},
                                   {"DestinationKeyId", a},
                                   {"DestinationEncryptionContext", kCtx}});
    CHECK(BlobKey(same["CiphertextBlob"]) == std::make_pair(a, uint32_t{3}));
    CHECK(same["SourceKeyVersion"] == 1);
    CHECK(same["KeyVersion"] == 3);
    CHECK(DecodeB64(h.Ok("Decrypt", {{"CiphertextBlob", same["CiphertextBlob"]},
                                     {"EncryptionContext", kCtx}})["Plaintext"]) == plain);
  }
  SECTION("errors") {
    h.Fails("ReEncrypt", {{"CiphertextBlob", dk["CiphertextBlob"]}, {"DestinationKeyId", b}},
            "InvalidCiphertextException");  // wrong (empty) source context
    h.Fails("ReEncrypt",
            {{"CiphertextBlob", dk["CiphertextBlob"]}, {"SourceEncryptionContext", kCtx}},
            "ValidationException");
    h.Fails("ReEncrypt",
            {{"CiphertextBlob", dk["CiphertextBlob"]},
             {"SourceEncryptionContext", kCtx},
             {"SourceKeyId", b},
             {"DestinationKeyId", b}},
            "IncorrectKeyException");
    h.Ok("DisableKey", {{"KeyId", b}});
    h.Fails("ReEncrypt",
            {{"CiphertextBlob", dk["CiphertextBlob"]},
             {"SourceEncryptionContext", kCtx},
             {"DestinationKeyId", b}},
            "DisabledException");
  }
}

// Root administers; alice (1000) uses the key for /alice/** through the filesystem, and may
// Encrypt directly; nobody decrypts /alice/secret/**; bob may only ReEncrypt *to* the key.
const char kPolicy[] = R"({
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "RootAdmin", "Effect": "Allow", "Principal": {"Uid": 0}, "Action": "kms:*"},
    {"Sid": "AliceHome", "Effect": "Allow", "Principal": {"Uid": 1000},
     "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
     "Condition": {"StringLike": {"kmsfs:Path": "/alice/**"}}},
    {"Sid": "AliceDirect", "Effect": "Allow", "Principal": {"Uid": 1000}, "Action": "kms:Encrypt",
     "Condition": {"StringEquals": {"kms:EncryptionContext:app": "billing"}}},
    {"Sid": "NoSecrets", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt",
     "Condition": {"StringLike": {"kmsfs:Path": "/alice/secret/**"}}},
    {"Sid": "BobReEncryptsIn", "Effect": "Allow", "Principal": {"Uid": 1001},
     "Action": "kms:ReEncryptTo"},
    {"Sid": "Vol1Only", "Effect": "Allow", "Principal": {"Uid": 1002},
     "Action": "kms:GenerateDataKey", "Condition": {"StringEquals": {"kmsfs:Volume": "vol1"}}}
  ]
})";

TEST_CASE("policy decides per principal, path, context and volume", "[service][policy]") {
  Harness h;
  const std::string id = h.CreateKey({{"Policy", kPolicy}});
  const json gdk = {{"KeyId", id}, {"KeySpec", "AES_256"}, {"EncryptionContext", kCtx}};

  // Forwarded by the filesystem for alice, on her own files: allowed.
  json dk = h.Ok("GenerateDataKey", gdk, Forwarded(1000, "/alice/notes.txt"));
  auto rec = h.LastAudit();
  CHECK(rec.principal.uid == 1000);
  REQUIRE(rec.forwarder.has_value());
  CHECK(rec.forwarder->uid == 0);
  CHECK(rec.path == "/alice/notes.txt");
  CHECK(rec.sid == "AliceHome");
  const json dec = {{"CiphertextBlob", dk["CiphertextBlob"]}, {"EncryptionContext", kCtx}};
  h.Ok("Decrypt", dec, Forwarded(1000, "/alice/notes.txt"));

  // Outside her tree: default deny, and the message gives neither Sid nor path.
  std::string msg = h.Fails("Decrypt", dec, "AccessDeniedException", Forwarded(1000, "/bob/x"));
  CHECK(msg.find("kms:Decrypt") != std::string::npos);
  CHECK(msg.find("/bob") == std::string::npos);
  rec = h.LastAudit();
  CHECK(rec.decision == "Deny");
  CHECK(rec.outcome == "AccessDeniedException");
  CHECK(rec.path == "/bob/x");

  // An explicit Deny wins over AliceHome; the Sid goes to the audit record only.
  msg = h.Fails("Decrypt", dec, "AccessDeniedException", Forwarded(1000, "/alice/secret/k"));
  CHECK(msg.find("NoSecrets") == std::string::npos);
  CHECK(msg.find("explicitly") != std::string::npos);
  CHECK(h.LastAudit().sid == "NoSecrets");
  CHECK(h.LastAudit().decision == "Deny");
  CHECK(h.LastAudit().detail.find("/alice/secret/k") != std::string::npos);

  // Directly (no path): the path statements do not apply.
  h.Fails("Decrypt", dec, "AccessDeniedException", Alice());
  // Encryption context conditions.
  h.Ok("Encrypt",
       {{"KeyId", id}, {"Plaintext", B64("x")}, {"EncryptionContext", {{"app", "billing"}}}},
       Alice());
  h.Fails("Encrypt",
          {{"KeyId", id}, {"Plaintext", B64("x")}, {"EncryptionContext", {{"app", "hr"}}}},
          "AccessDeniedException", Alice());
  // kmsfs:Volume comes from EncryptionContext["kmsfs:volume"].
  h.Ok("GenerateDataKey", gdk, testing::Caller(1002));
  json other_vol = gdk;
  other_vol["EncryptionContext"]["kmsfs:volume"] = "vol2";
  h.Fails("GenerateDataKey", other_vol, "AccessDeniedException", testing::Caller(1002));
  // GenerateDataKeyWithoutPlaintext is its own action.
  h.Fails("GenerateDataKeyWithoutPlaintext", gdk, "AccessDeniedException", testing::Caller(1002));

  SECTION("ReEncrypt needs ReEncryptFrom on the source and ReEncryptTo on the destination") {
    const std::string other = h.CreateKey();  // default policy: root only
    json from_other = h.Ok("Encrypt", {{"KeyId", other}, {"Plaintext", B64("k")}});
    // bob: ReEncryptTo on `id` but no ReEncryptFrom on `other`.
    h.Fails("ReEncrypt",
            {{"CiphertextBlob", from_other["CiphertextBlob"]}, {"DestinationKeyId", id}},
            "AccessDeniedException", Bob());
    CHECK(h.LastAudit().key_id == other);
    // root: ReEncryptFrom `id` is allowed (kms:*); bob cannot ReEncryptFrom `id`.
    json in_id = h.Ok("ReEncrypt",
                      {{"CiphertextBlob", from_other["CiphertextBlob"]}, {"DestinationKeyId", id}});
    h.Fails("ReEncrypt", {{"CiphertextBlob", in_id["CiphertextBlob"]}, {"DestinationKeyId", other}},
            "AccessDeniedException", Bob());
  }
}

TEST_CASE("OnBehalfOf: the service judges Effective() and records the forwarder",
          "[service][policy]") {
  Harness h;
  const std::string id = h.CreateKey({{"Policy", kPolicy}});
  const json gdk = {{"KeyId", id}, {"KeySpec", "AES_256"}};

  SECTION("honoured: root forwarding for bob is bob, and bob is denied") {
    h.Fails("GenerateDataKey", gdk, "AccessDeniedException", Forwarded(1001, "/alice/x"));
    auto rec = h.LastAudit();
    CHECK(rec.principal.uid == 1001);
    CHECK(rec.principal.executable == "/usr/bin/cat");
    REQUIRE(rec.forwarder.has_value());
    CHECK(rec.forwarder->executable == "/usr/bin/kmsfs");
  }
  SECTION("ignored (untrusted peer): the peer is the principal, and the record says so") {
    CallerContext c = Alice();
    c.forwarded_ignored = true;  // the server dropped alice's claim to be someone else
    h.Fails("GenerateDataKey", gdk, "AccessDeniedException", c);  // no path: AliceHome n/a
    auto rec = h.LastAudit();
    CHECK(rec.principal.uid == 1000);
    CHECK_FALSE(rec.forwarder.has_value());
    CHECK(rec.detail.find("OnBehalfOf ignored") != std::string::npos);
  }
  SECTION("root's own identity is not used when forwarding") {
    // Root may do anything, but forwarding for uid 1003 means uid 1003 is judged.
    h.Fails("GenerateDataKey", gdk, "AccessDeniedException", Forwarded(1003, "/x"));
    h.Ok("GenerateDataKey", gdk, Root());
  }
}

TEST_CASE("concurrent key use from a worker pool", "[service][concurrency]") {
  Harness h(SinkKind::kSimple);
  const std::string id = h.CreateKey();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        json ctx = {{"kmsfs:file", std::to_string(t * 100 + i)}};
        ServiceReply g = h.service->Handle(
            "GenerateDataKey", {{"KeyId", id}, {"KeySpec", "AES_256"}, {"EncryptionContext", ctx}},
            Root());
        if (!g.ok()) {
          ++failures;
          continue;
        }
        ServiceReply d = h.service->Handle(
            "Decrypt", {{"CiphertextBlob", g.result["CiphertextBlob"]}, {"EncryptionContext", ctx}},
            Root());
        if (!d.ok() || d.result["Plaintext"] != g.result["Plaintext"]) ++failures;
        if (i == 5 && t == 0) h.service->Handle("RotateKeyOnDemand", {{"KeyId", id}}, Root());
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
  auto audit = h.Audit();
  CHECK(audit.size() == 1 + 8 * 10 * 2 + 1);
  for (size_t i = 0; i < audit.size(); ++i) CHECK(audit[i].sequence == i + 1);
}

}  // namespace
}  // namespace kmsfs::keyd
