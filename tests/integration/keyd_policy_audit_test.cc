// Key policies and the audit trail, end to end: the real kmsfs-keyd and kmsctl, callers under
// other uids (setpriv, fork+setresuid), a trusted forwarder sending OnBehalfOf, the hash-chained
// trail listed, verified, tampered with, and a full disk under keyd's state (fail closed).
#include <grp.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>

#include "common/base/bytes.h"
#include "common/format/base64.h"
#include "common/ipc/errors.h"
#include "common/ipc/keyd_client.h"
#include "keyd/store/lmdb_env.h"
#include "tests/catch.h"
#include "tests/integration/harness.h"

namespace kmsfs::it {
namespace {

using nlohmann::json;

constexpr char kPolicy[] = R"({
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "RootAdmin", "Effect": "Allow", "Principal": {"Uid": 0}, "Action": "kms:*"},
    {"Sid": "AliceFiles", "Effect": "Allow", "Principal": {"Uid": 1000},
     "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
     "Condition": {"StringLike": {"kmsfs:Path": "/alice/**"}}},
    {"Sid": "AliceApp", "Effect": "Allow", "Principal": {"Uid": 1000}, "Action": "kms:Decrypt",
     "Condition": {"StringEquals": {"kms:EncryptionContext:app": "alice-app"}}},
    {"Sid": "NoSecrets", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt",
     "Condition": {"StringLike": {"kmsfs:Path": "/alice/secret/**"}}}
  ]
})";

void RequireRoot() {
  if (::geteuid() != 0) Skip("needs root (setpriv to other uids, tmpfs mounts)");
  RequireTool("setpriv");
}

void WriteFile(const std::string& path, const std::string& bytes, mode_t mode = 0644) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
    REQUIRE(out.good());
  }
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

std::string CreateKey(Sandbox& box) {
  WriteFile(box.Path("policy.json"), kPolicy);
  auto r = box.Ctl({"create-key", "--description", "policy+audit", "--policy",
                    "file://" + box.Path("policy.json")});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return r.json["KeyMetadata"]["KeyId"].get<std::string>();
}

// A wrapped data key made by root under `context`, written raw to `file` (readable by all).
void MakeBlob(Sandbox& box, const std::string& key_id, const std::string& context,
              const std::string& file) {
  std::vector<std::string> args = {"generate-data-key-without-plaintext", "--key-id", key_id,
                                   "--outfile", file};
  if (!context.empty()) args.insert(args.end(), {"--encryption-context", context});
  auto r = box.Ctl(args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(::chmod(file.c_str(), 0644) == 0);
}

Bytes ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return Bytes(s.begin(), s.end());
}

// Decrypt of `blob` sent by this (root) process as a trusted forwarder for uid/path; "" on
// success, else the error name.
std::string ForwardedDecrypt(const std::string& socket, const Bytes& blob, uint32_t uid,
                             const std::string& path) {
  ipc::KeydClient client(socket);
  ipc::OnBehalfOf who;
  who.uid = uid;
  who.gid = uid;
  who.pid = ::getpid();
  who.path = path;
  auto r = client.Decrypt(blob, {}, &who);
  return r.ok() ? "" : std::string(ipc::ErrorNameOf(r.error()));
}

// The same, but from a child process that dropped to uid/gid 1000 first: its OnBehalfOf (claiming
// root on /alice/x) must be ignored. Returns the error name ("" on success) via the exit path.
std::string ForgedDecryptAsUser(const std::string& socket, const Bytes& blob) {
  const std::string out = InChildOutput([&] {
    if (!BecomeUser(1000, 1000)) ::_exit(3);
    ipc::KeydClient client(socket);
    ipc::OnBehalfOf forged;
    forged.uid = 0;
    forged.gid = 0;
    forged.pid = 1;
    forged.path = "/alice/x";
    auto r = client.Decrypt(blob, {}, &forged);
    return r.ok() ? std::string("OK") : std::string(ipc::ErrorNameOf(r.error()));
  });
  return out == "OK" ? "" : out;
}

// `kmsctl audit list --output json` (plus filters): one record per line.
std::vector<json> AuditList(Sandbox& box, std::vector<std::string> filters = {}) {
  std::vector<std::string> args = {"audit", "list"};
  args.insert(args.end(), filters.begin(), filters.end());
  auto r = box.Ctl(args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::vector<json> records;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    REQUIRE(j.is_object());
    records.push_back(std::move(j));
  }
  return records;
}

// The records of `op` on `key` in order.
std::vector<json> Decisions(const std::vector<json>& all, const std::string& key) {
  std::vector<json> out;
  for (const json& r : all) {
    if (r["Operation"] == "Decrypt" && r["KeyId"] == key) out.push_back(r);
  }
  return out;
}

TEST_CASE("policy decisions by principal and path reach the audit trail", "[policy][audit]") {
  RequireRoot();
  Sandbox box;
  auto keyd = box.StartKeyd();
  const std::string key = CreateKey(box);
  MakeBlob(box, key, "", box.Path("plain.bin"));
  MakeBlob(box, key, "app=alice-app", box.Path("app.bin"));
  MakeBlob(box, key, "app=other", box.Path("other.bin"));
  const Bytes plain = ReadBytes(box.Path("plain.bin"));

  // A trusted forwarder (root, as the filesystem) asks for uid 1000 and 1001 on paths.
  CHECK(ForwardedDecrypt(box.socket_path(), plain, 1000, "/alice/x").empty());
  CHECK(ForwardedDecrypt(box.socket_path(), plain, 1000, "/bob/x") == "AccessDeniedException");
  CHECK(ForwardedDecrypt(box.socket_path(), plain, 1001, "/alice/x") == "AccessDeniedException");
  CHECK(ForwardedDecrypt(box.socket_path(), plain, 1000, "/alice/secret/k") ==
        "AccessDeniedException");

  // Real uid 1000 through kmsctl: the EncryptionContext decides.
  auto as_alice = [&](const std::string& blob, const std::string& ctx) {
    return Run(AsUser(1000, 1000,
                      {CtlBinary(), "--socket", box.socket_path(), "decrypt", "--ciphertext-blob",
                       "fileb://" + blob, "--encryption-context", ctx}));
  };
  auto ok = as_alice(box.Path("app.bin"), "app=alice-app");
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
  CHECK(ok.json.contains("Plaintext"));
  auto other = as_alice(box.Path("other.bin"), "app=other");
  CHECK(other.exit_code == 4);
  CHECK(other.err.find("AccessDeniedException") != std::string::npos);
  CHECK(other.out.find("Plaintext") == std::string::npos);
  // uid 1001 has no statement at all.
  auto bob =
      Run(AsUser(1001, 1001,
                 {CtlBinary(), "--socket", box.socket_path(), "decrypt", "--ciphertext-blob",
                  "fileb://" + box.Path("app.bin"), "--encryption-context", "app=alice-app"}));
  CHECK(bob.exit_code == 4);

  // uid 1000 forging OnBehalfOf (root on /alice/x) stays uid 1000 without a path: denied.
  CHECK(ForgedDecryptAsUser(box.socket_path(), plain) == "AccessDeniedException");

  // The audit trail: each decision with principal, path, Sid and outcome, in order.
  const std::vector<json> d = Decisions(AuditList(box, {"--key-id", key}), key);
  REQUIRE(d.size() == 8);
  auto expect = [&](size_t i, uint32_t uid, const std::string& path, const std::string& decision,
                    const std::string& sid, const std::string& outcome) {
    INFO("record " << i << ": " << d[i].dump());
    CHECK(d[i]["Principal"]["Uid"] == uid);
    CHECK(d[i]["Path"] == path);
    CHECK(d[i]["Decision"] == decision);
    CHECK(d[i]["Sid"] == sid);
    CHECK(d[i]["Outcome"] == outcome);
  };
  expect(0, 1000, "/alice/x", "Allow", "AliceFiles", "Success");
  expect(1, 1000, "/bob/x", "Deny", "", "AccessDeniedException");
  expect(2, 1001, "/alice/x", "Deny", "", "AccessDeniedException");
  expect(3, 1000, "/alice/secret/k", "Deny", "NoSecrets", "AccessDeniedException");
  expect(4, 1000, "", "Allow", "AliceApp", "Success");
  expect(5, 1000, "", "Deny", "", "AccessDeniedException");
  expect(6, 1001, "", "Deny", "", "AccessDeniedException");
  expect(7, 1000, "", "Deny", "", "AccessDeniedException");
  for (size_t i = 0; i < 4; ++i) CHECK(d[i]["Forwarder"]["Uid"] == 0);
  CHECK(d[4]["Forwarder"].is_null());
  CHECK(d[7]["Forwarder"].is_null());
  CHECK(d[7]["Detail"].get<std::string>().find("OnBehalfOf ignored") != std::string::npos);
  CHECK(d[4]["EncryptionContext"]["app"] == "alice-app");

  // Filters.
  CHECK(Decisions(AuditList(box, {"--uid", "1001"}), key).size() == 2);
  CHECK(Decisions(AuditList(box, {"--path-prefix", "/alice"}), key).size() == 3);
  CHECK(AuditList(box, {"--outcome", "AccessDeniedException", "--operation", "Decrypt"}).size() ==
        6);
  CHECK(AuditList(box, {"--limit", "2"}).size() == 2);
  CHECK(AuditList(box, {"--start-time", "2999-01-01T00:00:00Z"}).empty());
  auto table = Run({CtlBinary(), "--socket", box.socket_path(), "audit", "list", "--output",
                    "table", "--uid", "1001"});
  CHECK(table.exit_code == 0);
  CHECK(table.out.find("SEQ") == 0);
  auto tail = box.Ctl({"audit", "tail", "-n", "3"});
  CHECK(tail.exit_code == 0);
  CHECK(std::count(tail.out.begin(), tail.out.end(), '\n') == 3);

  // Audit reads are for uid 0 only (and the denial is itself audited).
  auto denied =
      Run(AsUser(1000, 1000, {CtlBinary(), "--socket", box.socket_path(), "audit", "list"}));
  CHECK(denied.exit_code == 4);
  CHECK(denied.err.find("AccessDeniedException") != std::string::npos);
  CHECK(AuditList(box, {"--operation", "ListAudit"}).size() == 1);

  // The simulator agrees with the engine and names the statement; exit 0 Allow, 4 Deny.
  auto sim = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"test-access", "--key-id", key, "--action", "kms:Decrypt"};
    args.insert(args.end(), extra.begin(), extra.end());
    return box.Ctl(args);
  };
  auto allow = sim({"--uid", "1000", "--gid", "1000", "--path", "/alice/a/b"});
  CHECK(allow.exit_code == 0);
  CHECK(allow.json["Decision"] == "Allow");
  CHECK(allow.json["Sid"] == "AliceFiles");
  auto deny = sim({"--uid", "1000", "--gid", "1000", "--path", "/alice/secret/x"});
  CHECK(deny.exit_code == 4);
  CHECK(deny.json["Decision"] == "Deny");
  CHECK(deny.json["Sid"] == "NoSecrets");
  auto ctx = Run({CtlBinary(), "--socket", box.socket_path(), "--output", "text", "test-access",
                  "--key-id", key, "--action", "kms:Decrypt", "--uid", "1000", "--gid", "1000",
                  "--encryption-context", "app=alice-app"});
  CHECK(ctx.exit_code == 0);
  CHECK(ctx.out.rfind("Allow\tAliceApp\t", 0) == 0);
  // Simulating needs kms:GetKeyPolicy, which uid 1000 lacks.
  auto nosim = Run(AsUser(1000, 1000,
                          {CtlBinary(), "--socket", box.socket_path(), "test-access", "--key-id",
                           key, "--action", "kms:Decrypt"}));
  CHECK(nosim.exit_code == 4);
  CHECK(nosim.err.find("AccessDeniedException") != std::string::npos);

  // Policy validation errors name the location.
  WriteFile(box.Path("bad.json"),
            R"({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*",)"
            R"("Action":["kms:Decrypt","kms:Decrpyt"]}]})");
  auto bad =
      box.Ctl({"put-key-policy", "--key-id", key, "--policy", "file://" + box.Path("bad.json")});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("Statement[0].Action[1]") != std::string::npos);
  auto got = box.Ctl({"get-key-policy", "--key-id", key});
  CHECK(got.exit_code == 0);
  CHECK(got.json["Policy"].get<std::string>().find("AliceFiles") != std::string::npos);

  // The chain verifies, also against a checkpoint kept in a file.
  auto cp = box.Ctl({"audit", "checkpoint", "--out", box.Path("cp.json")});
  INFO(cp.err);
  CHECK(cp.exit_code == 0);
  auto verify = box.Ctl({"audit", "verify", "--checkpoint", box.Path("cp.json")});
  INFO(verify.err);
  CHECK(verify.exit_code == 0);
  CHECK(verify.json["Ok"] == true);
}

TEST_CASE("audit verify names the sequence of a record edited on disk", "[audit]") {
  RequireRoot();
  Sandbox box;
  auto keyd = box.StartKeyd();
  const std::string key = CreateKey(box);
  for (int i = 0; i < 5; ++i) MakeBlob(box, key, "n=" + std::to_string(i), box.Path("b.bin"));
  REQUIRE(box.Ctl({"audit", "verify"}).exit_code == 0);
  auto records = AuditList(box);
  REQUIRE(records.size() >= 6);
  const uint64_t victim = records[3]["Sequence"].get<uint64_t>();
  REQUIRE(keyd->Stop() == std::optional<int>(0));

  const std::string copy = box.Path("state-copy");
  REQUIRE(Run({"cp", "-a", box.state_dir(), copy}).exit_code == 0);
  {
    // Edit the record in place: its JSON still parses, only its hash no longer matches.
    auto env = keyd::Env::Open(copy);
    REQUIRE(env.ok());
    auto db = (*env)->OpenDb("audit", false);
    REQUIRE(db.ok());
    std::string seq_key(8, '\0');
    for (int i = 0; i < 8; ++i) seq_key[7 - i] = static_cast<char>((victim >> (8 * i)) & 0xff);
    auto txn = (*env)->BeginWrite();
    REQUIRE(txn.ok());
    auto text = txn->Get(*db, seq_key);
    REQUIRE(text.ok());
    const size_t at = text->find("\"Outcome\":\"Success\"");
    REQUIRE(at != std::string::npos);
    std::string edited = *text;
    edited.replace(at, 19, "\"Outcome\":\"Suxcess\"");
    REQUIRE(txn->Put(*db, seq_key, edited).ok());
    REQUIRE(txn->Commit().ok());
  }
  Keyd tampered(box.root(), 50, copy, box.Path("copy.sock"), box.root_key_file(), {});
  auto r = Run({CtlBinary(), "--socket", box.Path("copy.sock"), "audit", "verify"});
  CHECK(r.exit_code == 9);
  CHECK(r.err.find("at sequence " + std::to_string(victim) + ":") != std::string::npos);
  CHECK(r.err.find("record " + std::to_string(victim)) != std::string::npos);
  json report = json::parse(r.out, nullptr, false);
  REQUIRE(report.is_object());
  CHECK(report["Ok"] == false);
  CHECK(report["BadSequence"] == victim);
}

// A tmpfs mounted for the test and lazily unmounted however the test ends.
class Tmpfs {
 public:
  Tmpfs(const std::string& dir, const std::string& size) : dir_(dir) {
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + size + ",mode=0700").c_str()) != 0) {
      const int e = errno;
      Skip("cannot mount a tmpfs (" + std::string(std::strerror(e)) + ")");
    }
    mounted_ = true;
  }
  ~Tmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;

 private:
  std::string dir_;
  bool mounted_ = false;
};

TEST_CASE("a full disk under the audit trail refuses keys, and recovers", "[audit][fail-closed]") {
  RequireRoot();
  Sandbox box;
  // Before keyd: destroyed after it. Room for keyd's 8 MiB preallocated audit.wal, so the test
  // runs the write-ahead path (a smaller fs makes keyd commit every record in LMDB instead).
  Tmpfs fs(box.Path("tiny"), "16m");
  const std::string state = box.Path("tiny/state");
  Keyd keyd(box.root(), 60, state, box.socket_path(), box.root_key_file(), {});
  REQUIRE(keyd.running());
  const std::string key = CreateKey(box);
  MakeBlob(box, key, "", box.Path("blob.bin"));
  const Bytes blob = ReadBytes(box.Path("blob.bin"));
  const size_t before = AuditList(box).size();
  REQUIRE(before >= 2);
  const std::vector<std::string> gdk_ok = {"--operation", "GenerateDataKey", "--outcome",
                                           "Success",     "--limit",         "1000"};
  const size_t gdk_before = AuditList(box, gdk_ok).size();

  // Fill the filesystem; then key use must stop once records cannot be written. Requests may
  // pass first: LMDB may reuse a few freed pages, and records keep going to the preallocated
  // write-ahead file (durably) until the next ingest into LMDB fails (every 256 records).
  Run({"dd", "if=/dev/zero", "of=" + box.Path("tiny/filler"), "bs=64k"});
  ipc::KeydClient client(box.socket_path());
  std::string refused;
  size_t succeeded = 0;
  for (int i = 0; i < 500 && refused.empty(); ++i) {
    auto r = client.Call(ipc::Op::kGenerateDataKey, json{{"KeyId", key}, {"KeySpec", "AES_256"}});
    if (!r.ok()) refused = std::string(ipc::ErrorNameOf(r.error()));
    if (r.ok()) ++succeeded;
  }
  CHECK(refused == "KMSInternalException");
  auto gdk = box.Ctl({"generate-data-key", "--key-id", key});
  CHECK(gdk.exit_code != 0);
  CHECK(gdk.out.find("Plaintext") == std::string::npos);
  CHECK(gdk.err.find("KMSInternalException") != std::string::npos);
  CHECK(gdk.err.find("audit trail unavailable") != std::string::npos);
  auto dec = box.Ctl({"decrypt", "--ciphertext-blob", "fileb://" + box.Path("blob.bin")});
  CHECK(dec.exit_code != 0);
  CHECK(dec.out.find("Plaintext") == std::string::npos);
  CHECK(dec.err.find("KMSInternalException") != std::string::npos);
  CHECK(box.Ctl({"ping"}).exit_code == 0);
  CHECK(keyd.running());

  // Space again: the same calls succeed, and everything committed before is intact.
  REQUIRE(::unlink(box.Path("tiny/filler").c_str()) == 0);
  auto gdk2 = box.Ctl({"generate-data-key", "--key-id", key});
  INFO(gdk2.err);
  CHECK(gdk2.exit_code == 0);
  CHECK(gdk2.json.contains("Plaintext"));
  auto dec2 = box.Ctl({"decrypt", "--ciphertext-blob", "fileb://" + box.Path("blob.bin")});
  CHECK(dec2.exit_code == 0);
  CHECK(dec2.json.contains("Plaintext"));
  CHECK(AuditList(box).size() > before);
  // Every request that got a key has its record, the ones while the disk was full included; no
  // refused request left a Success record.
  INFO(succeeded << " requests succeeded on the full disk");
  CHECK(AuditList(box, gdk_ok).size() == gdk_before + succeeded + 1);
  auto verify = box.Ctl({"audit", "verify"});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
  REQUIRE(keyd.Stop() == std::optional<int>(0));
}

}  // namespace
}  // namespace kmsfs::it
