#include "keyd/store/root_key.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/catch.h"
#include "tests/unit/keyd/store/store_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::TempDir;
using testing::TestRootKey;
using testing::WriteFileBytes;

const std::string kKeyBytes(32, '\x5a');  // test-only key

// A pipe whose read end yields `text` then EOF. The caller closes the returned fd.
int PipeWith(std::string_view text) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  REQUIRE(::write(fds[1], text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  ::close(fds[1]);
  return fds[0];
}

crypto::ScryptParams CheapScrypt() {
  crypto::ScryptParams p;
  p.n = 1024;  // tests only: the default costs 128 MiB and ~0.3 s per derivation
  p.r = 8;
  p.p = 1;
  return p;
}

TEST_CASE("key files: 0600 and 32 bytes accepted, anything else refused", "[store][rootkey]") {
  TempDir tmp;
  const std::string path = tmp.Sub("root.key");

  SECTION("0600, 32 bytes") {
    WriteFileBytes(path, kKeyBytes, 0600);
    auto key = ReadRootKeyFile(path);
    REQUIRE(key.ok());
    CHECK(std::string(AsChars(key->span())) == kKeyBytes);
  }
  SECTION("0400 is fine too") {
    WriteFileBytes(path, kKeyBytes, 0400);
    CHECK(ReadRootKeyFile(path).ok());
  }
  SECTION("0644 is refused with the path, the mode and the fix") {
    WriteFileBytes(path, kKeyBytes, 0644);
    auto key = ReadRootKeyFile(path);
    REQUIRE_FALSE(key.ok());
    CHECK(key.error().code() == Code::kPermissionDenied);
    CHECK(key.error().message().find(path) != std::string::npos);
    CHECK(key.error().message().find("0644") != std::string::npos);
    CHECK(key.error().message().find("chmod 600") != std::string::npos);
  }
  SECTION("group-readable 0640 is refused") {
    WriteFileBytes(path, kKeyBytes, 0640);
    CHECK(ReadRootKeyFile(path).status().code() == Code::kPermissionDenied);
  }
  SECTION("wrong lengths are refused") {
    WriteFileBytes(path, kKeyBytes + "\n", 0600);
    auto key = ReadRootKeyFile(path);
    CHECK(key.status().code() == Code::kInvalidArgument);
    CHECK(key.error().message().find("33 bytes") != std::string::npos);
    WriteFileBytes(path, kKeyBytes.substr(0, 31), 0600);
    CHECK(ReadRootKeyFile(path).status().code() == Code::kInvalidArgument);
    WriteFileBytes(path, "", 0600);
    CHECK(ReadRootKeyFile(path).status().code() == Code::kInvalidArgument);
  }
  SECTION("not a regular file") {
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    CHECK(ReadRootKeyFile(path).status().code() == Code::kPermissionDenied);
    CHECK(ReadRootKeyFile(tmp.path()).status().code() == Code::kPermissionDenied);  // a dir
  }
  SECTION("missing") { CHECK(ReadRootKeyFile(path).status().code() == Code::kIo); }
}

TEST_CASE("passphrases are the first line of the fd", "[store][rootkey]") {
  int fd = PipeWith("correct horse battery staple\nsecond line");
  auto p = ReadPassphrase(fd);
  REQUIRE(p.ok());
  CHECK(AsChars(p->span()) == "correct horse battery staple");
  char rest[32];
  CHECK(::read(fd, rest, sizeof rest) == 11);  // nothing after the line was consumed
  ::close(fd);

  fd = PipeWith("windows\r\n");
  CHECK(AsChars(ReadPassphrase(fd).value().span()) == "windows");
  ::close(fd);
  fd = PipeWith("no newline");
  CHECK(AsChars(ReadPassphrase(fd).value().span()) == "no newline");
  ::close(fd);
  fd = PipeWith("\n");
  CHECK(ReadPassphrase(fd).status().code() == Code::kInvalidArgument);
  ::close(fd);
  fd = PipeWith(std::string(kMaxPassphraseLen + 1, 'p'));
  CHECK(ReadPassphrase(fd).status().code() == Code::kInvalidArgument);
  ::close(fd);
  CHECK(ReadPassphrase(-1).status().code() == Code::kIo);
}

TEST_CASE("LoadRootKey prefers credential, then key file, then passphrase", "[store][rootkey]") {
  TempDir tmp;
  const std::string creds = tmp.Sub("creds");
  REQUIRE(::mkdir(creds.c_str(), 0700) == 0);
  const std::string key_file = tmp.Sub("root.key");
  WriteFileBytes(key_file, std::string(32, '\x01'), 0600);
  const StateInfo fresh;

  RootKeyOptions o;
  o.credentials_dir = creds;  // set, but holds no kmsfs-root-key: skipped
  o.key_file = key_file;
  auto loaded = LoadRootKey(o, fresh);
  REQUIRE(loaded.ok());
  CHECK(loaded->source == RootKeySource::kKeyFile);
  CHECK(loaded->key == TestRootKey(1));
  CHECK_FALSE(loaded->kdf_params.has_value());

  WriteFileBytes(creds + "/kmsfs-root-key", std::string(32, '\x02'), 0400);
  loaded = LoadRootKey(o, fresh);
  REQUIRE(loaded.ok());
  CHECK(loaded->source == RootKeySource::kCredential);
  CHECK(loaded->key == TestRootKey(2));

  RootKeyOptions none;
  CHECK(LoadRootKey(none, fresh).status().code() == Code::kInvalidArgument);

  // A passphrase state refuses a key file, with a message saying what to use.
  StateInfo passphrase_state;
  passphrase_state.initialized = true;
  passphrase_state.kdf = NewKdfParams(CheapScrypt());
  auto mismatch = LoadRootKey(o, passphrase_state);
  CHECK(mismatch.status().code() == Code::kFailedPrecondition);
  CHECK(mismatch.error().message().find("--passphrase-fd") != std::string::npos);
}

TEST_CASE("a passphrase state: salt stored at init, same passphrase reopens", "[store][rootkey]") {
  TempDir tmp;
  const std::string dir = tmp.Sub("state");
  RootKeyOptions o;
  o.new_kdf = CheapScrypt();
  std::string key_id;
  {
    o.passphrase_fd = PipeWith("hunter2 is not a good passphrase\n");
    auto opened = OpenKeyStore(dir, o, {});
    ::close(o.passphrase_fd);
    REQUIRE(opened.ok());
    CHECK(opened->source == RootKeySource::kPassphrase);
    key_id = opened->store->CreateKey("k", {}, "").value().key_id;
    auto info = KeyStore::Probe(opened->store->env()).value();
    REQUIRE(info.kdf.has_value());
    CHECK(info.kdf->salt.size() == kKdfSaltLen);
    CHECK(info.kdf->n == 1024);
  }
  {
    o.passphrase_fd = PipeWith("hunter2 is not a good passphrase\n");
    auto opened = OpenKeyStore(dir, o, {});
    ::close(o.passphrase_fd);
    REQUIRE(opened.ok());
    CHECK(opened->store->GetVersionMaterial(key_id, 1).ok());
  }
  {
    o.passphrase_fd = PipeWith("hunter3 is not a good passphrase\n");
    auto opened = OpenKeyStore(dir, o, {});
    ::close(o.passphrase_fd);
    CHECK(opened.status().code() == Code::kPermissionDenied);
  }
  {
    // Switch to a key file: re-seal under it and drop the KDF parameters, in one transaction.
    o.passphrase_fd = PipeWith("hunter2 is not a good passphrase\n");
    auto opened = OpenKeyStore(dir, o, {});
    ::close(o.passphrase_fd);
    REQUIRE(opened.ok());
    REQUIRE(opened->store->ChangeRootKey(TestRootKey(7), std::nullopt).ok());
  }
  RootKeyOptions file;
  file.key_file = tmp.Sub("root.key");
  WriteFileBytes(file.key_file, std::string(32, '\x07'), 0600);
  auto opened = OpenKeyStore(dir, file, {});
  REQUIRE(opened.ok());
  CHECK(opened->source == RootKeySource::kKeyFile);
  CHECK(opened->store->GetVersionMaterial(key_id, 1).ok());
  CHECK_FALSE(KeyStore::Probe(opened->store->env()).value().kdf.has_value());
}

}  // namespace
}  // namespace kmsfs::keyd
