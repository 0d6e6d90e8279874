// Integration: the key lifecycle on keyd's side (issue 5, docs/lifecycle.md) with the real
// kmsfs-keyd, kmsctl, LMDB and — where files are involved — a real kmsfs mount:
// retiring a key version, scheduled deletion (crypto-shredding), changing the root key, and the
// recovery drill (state lost → restore from backup with the root key or a recovery code).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "keyd/store/lmdb_env.h"
#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// keyd flags that make pending windows seconds long and the scheduler run often (TEST ONLY).
const std::vector<std::string> kFastWindows = {"--test-deletion-day-seconds", "1",
                                               "--min-pending-window-days",   "1",
                                               "--scheduler-interval",        "0.2"};

json CtlOk(Sandbox& box, const std::vector<std::string>& args) {
  RunResult r = box.Ctl(args);
  INFO("kmsctl " << args.front() << " exit " << r.exit_code << "\n" << r.out << r.err);
  REQUIRE(r.exit_code == 0);
  return r.json;
}

// kmsctl must fail with `exit_code` and print `error_name`.
void CtlFails(Sandbox& box, const std::vector<std::string>& args, int exit_code,
              const std::string& error_name) {
  RunResult r = box.Ctl(args);
  INFO("kmsctl " << args.front() << " exit " << r.exit_code << "\n" << r.out << r.err);
  CHECK(r.exit_code == exit_code);
  CHECK((r.err + r.out).find(error_name) != std::string::npos);
}

// Polls `pred` every 100 ms for up to `timeout`.
template <class Pred>
bool WaitFor(Pred pred, milliseconds timeout = milliseconds(20'000)) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(100));
  }
  return pred();
}

// A data key wrapped under `key`'s current version: its CiphertextBlob (base64).
std::string Wrap(Sandbox& box, const std::string& key) {
  json dk =
      CtlOk(box, {"generate-data-key-without-plaintext", "--key-id", key, "--key-spec", "AES_256"});
  return dk["CiphertextBlob"].get<std::string>();
}

std::vector<std::string> DecryptArgs(const std::string& blob) {
  return {"decrypt", "--ciphertext-blob", blob};
}

// The audit records of `operation` (on `key` unless empty), through kmsctl audit list, which
// prints one JSON record per line.
json AuditOf(Sandbox& box, const std::string& key, const std::string& operation) {
  std::vector<std::string> args = {"audit", "list", "--operation", operation};
  if (!key.empty()) args.insert(args.end(), {"--key-id", key});
  RunResult r = box.Ctl(args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  json records = json::array();
  size_t start = 0;
  while (start < r.out.size()) {
    size_t end = r.out.find('\n', start);
    if (end == std::string::npos) end = r.out.size();
    if (end > start) records.push_back(json::parse(r.out.substr(start, end - start)));
    start = end + 1;
  }
  return records;
}

// kmsfs-keyd's offline commands.
RunResult KeydTool(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {KeydBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

std::string Sh(const std::string& s) { return "'" + s + "'"; }  // paths here have no quotes

TEST_CASE(
    "retire a key version: refused at once and audited, cancellable, destroyed after the "
    "window",
    "[lifecycle][retire]") {
  Sandbox box;
  auto keyd = box.StartKeyd(KeydArgs(kFastWindows));
  const std::string key =
      CtlOk(box, {"create-key", "--description", "lifecycle"})["KeyMetadata"]["KeyId"];
  const std::string v1 = Wrap(box, key);
  CtlOk(box, {"rotate-key-on-demand", "--key-id", key});
  const std::string v2 = Wrap(box, key);

  // The primary version cannot be retired.
  CtlFails(box, {"retire-key-version", "--key-id", key, "--key-version", "2"}, 5,
           "KMSInvalidStateException");
  json r = CtlOk(box, {"retire-key-version", "--key-id", key, "--key-version", "1",
                       "--pending-window-in-days", "30"});
  CHECK(r["KeyVersionState"] == "Retired");
  CHECK(r["PendingWindowInDays"] == 30);
  // Unusable at once: ENOKEY's code (exit 5), named KeyUnavailableException; v2 unaffected.
  CtlFails(box, DecryptArgs(v1), 5, "KeyUnavailableException");
  CtlOk(box, DecryptArgs(v2));
  json refused = AuditOf(box, key, "Decrypt");
  bool saw_refusal = false;
  for (const json& rec : refused) {
    saw_refusal |= rec.dump().find("KeyUnavailableException") != std::string::npos;
  }
  CHECK(saw_refusal);
  CHECK(AuditOf(box, key, "RetireKeyVersion").size() == 2);  // the refused one and the done one

  json versions = CtlOk(box, {"list-key-versions", "--key-id", key});
  REQUIRE(versions["Versions"].size() == 2);
  CHECK(versions["Versions"][0]["KeyVersionState"] == "Retired");
  CHECK(versions["Versions"][0].contains("DestructionDate"));

  // Cancelling during the window restores it.
  CtlOk(box, {"cancel-key-version-retirement", "--key-id", key, "--key-version", "1"});
  CtlOk(box, DecryptArgs(v1));

  // Retire again with a 1-"day" (1 s under the test flag) window: the scheduler destroys it.
  CtlOk(box, {"retire-key-version", "--key-id", key, "--key-version", "1",
              "--pending-window-in-days", "1"});
  CHECK(WaitFor([&] {
    json v = CtlOk(box, {"list-key-versions", "--key-id", key});
    return v["Versions"][0]["KeyVersionState"] == "Destroyed";
  }));
  CtlFails(box, DecryptArgs(v1), 5, "KeyUnavailableException");
  CtlFails(box, {"cancel-key-version-retirement", "--key-id", key, "--key-version", "1"}, 5,
           "KMSInvalidStateException");
  CtlOk(box, DecryptArgs(v2));
  json destroyed = AuditOf(box, key, "DestroyKeyVersion");
  REQUIRE(destroyed.size() == 1);
  CHECK(destroyed[0].dump().find("destroyed") != std::string::npos);
  CHECK(keyd->Stop() == 0);
  CheckLog(keyd->Log(), {"retired", "destroyed", "KeyUnavailable", "no longer serves"},
           {box.root_key_hex()});
}

TEST_CASE(
    "scheduled deletion shreds a mounted volume's key, and only a backup from before brings it "
    "back",
    "[lifecycle][deletion][fs]") {
  RequireFuse();
  Sandbox box;
  auto keyd = box.StartKeyd(KeydArgs(kFastWindows));
  const std::string key = CreateKey(box);
  const std::string cipher = box.Path("cipher");
  const std::string mnt = box.Path("mnt");
  InitVolume(box, key, cipher);
  {
    Mount m(box, cipher, mnt);
    for (int i = 0; i < 20; ++i)
      WriteFile(m.Path("f" + std::to_string(i)), "secret " + std::to_string(i));
    CHECK(m.Unmount());
  }
  const std::string blob = Wrap(box, key);
  const std::string backup = box.Path("before-deletion.bak");
  // Acknowledged before the backup: in the copy, although keyd's write-ahead audit file (which a
  // backup does not copy) may still hold them; Backup flushes it into data.mdb first.
  const size_t wrapped_before_backup = AuditOf(box, key, "GenerateDataKeyWithoutPlaintext").size();
  REQUIRE(wrapped_before_backup >= 1);
  CtlOk(box, {"backup", backup});

  json sched =
      CtlOk(box, {"schedule-key-deletion", "--key-id", key, "--pending-window-in-days", "1"});
  CHECK(sched["KeyState"] == "PendingDeletion");
  // Revoked at once, destroyed after the window (1 s here).
  CtlFails(box, DecryptArgs(blob), 5, "KMSInvalidStateException");
  CHECK(WaitFor([&] {
    return CtlOk(box, {"describe-key", "--key-id", key})["KeyMetadata"]["KeyState"] == "Destroyed";
  }));
  json deleted = AuditOf(box, key, "DeleteKey");
  REQUIRE(deleted.size() == 1);
  CHECK(deleted[0].dump().find("all key material destroyed") != std::string::npos);
  CtlFails(box, DecryptArgs(blob), 5, "KMSInvalidStateException");
  CtlFails(box, {"cancel-key-deletion", "--key-id", key}, 5, "KMSInvalidStateException");
  // The volume no longer mounts (its name key cannot be unwrapped), and a restart does not help:
  // the material is gone from the state.
  CHECK(keyd->Stop() == 0);
  keyd = box.StartKeyd(KeydArgs(kFastWindows));
  CtlFails(box, DecryptArgs(blob), 5, "KMSInvalidStateException");
  {
    Mount::Options no_wait;
    no_wait.wait_ready = false;
    Mount m(box, cipher, mnt, no_wait);
    CHECK_FALSE(m.WaitReady(milliseconds(10'000)));
    CHECK_FALSE(IsMounted(mnt));
    m.Unmount();
    INFO("kmsfs log:\n" << m.Log());
    REQUIRE(m.exit_code().has_value());
    CHECK(*m.exit_code() != 0);
  }

  // The only way back: the keyd state from before the deletion.
  CHECK(keyd->Stop() == 0);
  std::filesystem::rename(box.state_dir(), box.Path("state.shredded"));
  RunResult restored = KeydTool({"restore", "--backup", backup, "--state-dir", box.state_dir(),
                                 "--root-key-file", box.root_key_file()});
  INFO(restored.err);
  REQUIRE(restored.exit_code == 0);
  keyd = box.StartKeyd(KeydArgs(kFastWindows));
  CHECK(CtlOk(box, {"describe-key", "--key-id", key})["KeyMetadata"]["KeyState"] == "Enabled");
  Mount m(box, cipher, mnt);
  for (int i = 0; i < 20; ++i)
    CHECK(ReadFile(m.Path("f" + std::to_string(i))) == "secret " + std::to_string(i));
  CHECK(AuditOf(box, "", "RestoreState").size() == 1);
  CHECK(AuditOf(box, key, "GenerateDataKeyWithoutPlaintext").size() == wrapped_before_backup);
  CHECK(m.Unmount());
}

TEST_CASE("recovery-code fails loudly when the code cannot be written", "[lifecycle][recovery]") {
  Sandbox box;
  CHECK(box.StartKeyd()->Stop() == 0);  // a state to work on
  const std::string cmd = Sh(KeydBinary()) + " recovery-code --state-dir " + Sh(box.state_dir()) +
                          " --root-key-file " + Sh(box.root_key_file());
  RunResult full = Run({"/bin/sh", "-c", cmd + " > /dev/full"});
  INFO(full.err);
  CHECK(full.exit_code == 1);
  CHECK(full.err.find("the recovery code could not be written; run recovery-code again") !=
        std::string::npos);
  RunResult ok = Run({"/bin/sh", "-c", cmd});
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
  CHECK(ok.out.size() == 66);  // 11 groups of 5 and a newline
}

TEST_CASE("keyd refuses its --test-* flags outside test mode", "[lifecycle]") {
  Sandbox box;
  for (const char* flag : {"--test-deletion-day-seconds", "--test-rotation-day-seconds"}) {
    RunResult r = Run({"/usr/bin/env", "-u", "KMSFS_TEST_MODE", KeydBinary(), flag, "1",
                       "--state-dir", box.state_dir(), "--root-key-file", box.root_key_file(),
                       "--socket", box.socket_path()});
    INFO(flag << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("KMSFS_TEST_MODE=1") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(box.state_dir() + "/data.mdb"));  // refused before any state
}

TEST_CASE("change-root-key re-seals the state offline, and the old root key no longer opens it",
          "[lifecycle][root-key]") {
  Sandbox box;
  auto keyd = box.StartKeyd();
  const std::string key = CtlOk(box, {"create-key"})["KeyMetadata"]["KeyId"];
  const std::string v1 = Wrap(box, key);
  CtlOk(box, {"rotate-key-on-demand", "--key-id", key});
  const std::string v2 = Wrap(box, key);
  const std::string new_key = box.Path("new-root.key");
  const std::string new_hex = box.MakeKeyFile(new_key);
  const std::vector<std::string> change = {
      "change-root-key",   "--state-dir",         box.state_dir(), "--root-key-file",
      box.root_key_file(), "--new-root-key-file", new_key};

  // Refused while keyd serves the state (exit 4), nothing changed.
  RunResult busy = KeydTool(change);
  CHECK(busy.exit_code == 4);
  CHECK(busy.err.find("in use") != std::string::npos);
  CtlOk(box, DecryptArgs(v1));
  CHECK(keyd->Stop() == 0);

  // A wrong current root key is refused (exit 3).
  const std::string wrong = box.Path("wrong.key");
  box.MakeKeyFile(wrong);
  CHECK(KeydTool({"change-root-key", "--state-dir", box.state_dir(), "--root-key-file", wrong,
                  "--new-root-key-file", new_key})
            .exit_code == 3);

  // The material as sealed under the old root key, read straight from LMDB (keyd is stopped).
  std::vector<std::string> old_sealed;
  {
    auto env = keyd::Env::Open(box.state_dir());
    REQUIRE(env.ok());
    auto db = (*env)->OpenDb("material", /*create=*/false);
    REQUIRE(db.ok());
    auto txn = (*env)->BeginRead();
    REQUIRE(txn.ok());
    REQUIRE(txn->Scan(*db, "", "", [&](std::string_view, std::string_view v) {
                  old_sealed.emplace_back(v);
                  return true;
                }).ok());
  }
  REQUIRE(old_sealed.size() == 2);

  RunResult done = KeydTool(change);
  INFO(done.err);
  REQUIRE(done.exit_code == 0);
  CHECK(done.err.find(new_hex) == std::string::npos);
  // data.mdb was rewritten compacted: its free pages no longer hold the old sealing.
  CHECK(done.err.find("Older backups and copies of the state still do") != std::string::npos);
  {
    std::ifstream in(box.state_dir() + "/data.mdb", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE_FALSE(bytes.empty());
    for (const std::string& old : old_sealed) CHECK(bytes.find(old) == std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(box.state_dir() + "/compact.tmp"));

  // The old root key no longer opens the state: keyd refuses to start (exit 3).
  auto old_keyd = box.StartKeyd(NoWait({}));
  CHECK(old_keyd->WaitExit(milliseconds(20'000)) == 3);
  CHECK(old_keyd->Log().find("wrong root key") != std::string::npos);
  old_keyd.reset();

  // The new one does, and data keys wrapped before (under both versions) still decrypt.
  Keyd fresh(box.root(), 50, box.state_dir(), box.socket_path(), new_key, Keyd::Options{});
  CtlOk(box, DecryptArgs(v1));
  CtlOk(box, DecryptArgs(v2));
  CtlOk(box, {"rotate-key-on-demand", "--key-id", key});  // new material sealed under the new key
  const std::string v3 = Wrap(box, key);
  CtlOk(box, DecryptArgs(v3));
  json changed = AuditOf(box, "", "ChangeRootKey");
  REQUIRE(changed.size() == 1);
  CHECK(changed[0].dump().find("re-sealed") != std::string::npos);
  CHECK(fresh.Stop() == 0);
  CheckLog(fresh.Log(), {}, {box.root_key_hex(), new_hex});

  // Key file -> passphrase -> another key file: the passphrase variants, through fd 0.
  const std::string pass = box.Path("pass.txt");
  std::ofstream(pass) << "correct horse battery staple\n";
  auto tool_with_stdin = [&](const std::string& args, const std::string& in) {
    return Run({"/bin/sh", "-c", Sh(KeydBinary()) + " " + args + " < " + Sh(in)});
  };
  RunResult to_pass =
      tool_with_stdin("change-root-key --state-dir " + Sh(box.state_dir()) + " --root-key-file " +
                          Sh(new_key) + " --new-passphrase-fd 0",
                      pass);
  INFO(to_pass.err);
  REQUIRE(to_pass.exit_code == 0);
  // The key file no longer opens it (exit 3: the state now wants a passphrase).
  CHECK(KeydTool({"recovery-code", "--state-dir", box.state_dir(), "--root-key-file", new_key})
            .exit_code == 3);
  const std::string last_key = box.Path("last-root.key");
  box.MakeKeyFile(last_key);
  RunResult to_file = tool_with_stdin("change-root-key --state-dir " + Sh(box.state_dir()) +
                                          " --passphrase-fd 0 --new-root-key-file " + Sh(last_key),
                                      pass);
  INFO(to_file.err);
  REQUIRE(to_file.exit_code == 0);
  Keyd last(box.root(), 51, box.state_dir(), box.socket_path(), last_key, Keyd::Options{});
  CtlOk(box, DecryptArgs(v1));
  CtlOk(box, DecryptArgs(v3));
  CHECK(AuditOf(box, "", "ChangeRootKey").size() == 3);
  CHECK(last.Stop() == 0);
}

TEST_CASE(
    "recovery drill: state lost, restored from a backup with the root key or with a "
    "recovery code, and the volume mounts and reads",
    "[lifecycle][recovery][fs]") {
  RequireFuse();
  Sandbox box;
  // Initialize the state, then make a recovery code (offline: keyd stopped).
  auto keyd = box.StartKeyd();
  RunResult busy = KeydTool(
      {"recovery-code", "--state-dir", box.state_dir(), "--root-key-file", box.root_key_file()});
  CHECK(busy.exit_code == 4);
  CHECK(keyd->Stop() == 0);
  RunResult made = KeydTool(
      {"recovery-code", "--state-dir", box.state_dir(), "--root-key-file", box.root_key_file()});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);
  std::string code = made.out;
  while (!code.empty() && (code.back() == '\n')) code.pop_back();
  REQUIRE(code.size() == 65);  // 11 groups of 5, 10 dashes
  const std::string code_file = box.Path("code.txt");
  std::ofstream(code_file) << code << "\n";
  ::chmod(code_file.c_str(), 0600);

  keyd = box.StartKeyd();
  const std::string key = CreateKey(box);
  const std::string cipher = box.Path("cipher");
  const std::string mnt = box.Path("mnt");
  InitVolume(box, key, cipher);
  {
    Mount m(box, cipher, mnt);
    REQUIRE(::mkdir(m.Path("docs").c_str(), 0755) == 0);
    for (int i = 0; i < 10; ++i)
      WriteFile(m.Path("docs/d" + std::to_string(i)), std::string(5000 + i, 'a' + i));
    CHECK(m.Unmount());
  }
  const std::string backup = box.Path("keyd.bak");
  CtlOk(box, {"backup", backup});
  CHECK(keyd->Stop() == 0);
  auto check_volume = [&] {
    Mount m(box, cipher, mnt);
    for (int i = 0; i < 10; ++i) {
      CHECK(ReadFile(m.Path("docs/d" + std::to_string(i))) == std::string(5000 + i, 'a' + i));
    }
    WriteFile(m.Path("after-restore"), "ok");
    CHECK(m.Unmount());
  };

  SECTION("with the root key") {
    std::filesystem::remove_all(box.state_dir());  // the machine died
    // Wrong root key: refused (exit 3), nothing installed.
    const std::string wrong = box.Path("wrong.key");
    box.MakeKeyFile(wrong);
    CHECK(KeydTool({"restore", "--backup", backup, "--state-dir", box.state_dir(),
                    "--root-key-file", wrong})
              .exit_code == 3);
    CHECK_FALSE(std::filesystem::exists(box.state_dir() + "/data.mdb"));
    RunResult r = KeydTool({"restore", "--backup", backup, "--state-dir", box.state_dir(),
                            "--root-key-file", box.root_key_file()});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    // Never over an existing state.
    CHECK(KeydTool({"restore", "--backup", backup, "--state-dir", box.state_dir(),
                    "--root-key-file", box.root_key_file()})
              .exit_code == 2);
    keyd = box.StartKeyd();
    check_volume();
    CHECK(keyd->Stop() == 0);
  }

  SECTION("root key lost: with the recovery code and a new root key") {
    std::filesystem::remove_all(box.state_dir());
    std::filesystem::remove(box.root_key_file());  // and the root key with it
    const std::string new_key = box.Path("new-root.key");
    const std::string new_hex = box.MakeKeyFile(new_key);
    auto restore_with = [&](const std::string& file) {
      return Run({"/bin/sh", "-c",
                  Sh(KeydBinary()) + " restore --backup " + Sh(backup) + " --state-dir " +
                      Sh(box.state_dir()) + " --recovery-code-fd 0 --new-root-key-file " +
                      Sh(new_key) + " < " + Sh(file)});
    };
    // A mistyped code is caught by its checksum (usage error, exit 2); another code is refused
    // (exit 3). Nothing is installed either way.
    std::string typo = code;
    typo[7] = typo[7] == 'A' ? 'B' : 'A';
    const std::string typo_file = box.Path("typo.txt");
    std::ofstream(typo_file) << typo << "\n";
    RunResult t = restore_with(typo_file);
    CHECK(t.exit_code == 2);
    CHECK(t.err.find("mistyped") != std::string::npos);
    CHECK(t.err.find(code) == std::string::npos);
    CHECK_FALSE(std::filesystem::exists(box.state_dir() + "/data.mdb"));

    RunResult r = restore_with(code_file);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.err.find(code) == std::string::npos);
    Keyd restored(box.root(), 60, box.state_dir(), box.socket_path(), new_key, Keyd::Options{});
    check_volume();
    CHECK(AuditOf(box, "", "RestoreState").size() == 1);
    CHECK(restored.Stop() == 0);
    CheckLog(restored.Log(), {}, {box.root_key_hex(), new_hex});
    // The code keeps opening the backups made after it (their escrow is theirs), while the
    // restored state, re-sealed under the new key, no longer holds the spent escrow.
    std::filesystem::rename(box.state_dir(), box.Path("state.restored"));
    CHECK(restore_with(code_file).exit_code == 0);
  }
}

}  // namespace
}  // namespace kmsfs::it
