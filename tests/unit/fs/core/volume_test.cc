#include "fs/core/volume.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>

#include "common/base/unique_fd.h"
#include "common/format/encryption_context.h"
#include "common/format/name_encoding.h"
#include "common/format/volume_config.h"
#include "fs/core/dir_id.h"
#include "fs/core/small_file.h"
#include "tests/catch.h"
#include "tests/fakes/fake_data_key_source.h"
#include "tests/unit/fs/test_util.h"

namespace kmsfs::fs {
namespace {

using fakes::FakeDataKeySource;
using testing::TempDir;

const Requester kAdmin{0, 0, 0, ""};

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteText(const std::string& path, const std::string& text) {
  ::chmod(path.c_str(), 0600);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

UniqueFd OpenDir(const std::string& path, int extra = 0) {
  return UniqueFd(::open(path.c_str(), O_DIRECTORY | O_CLOEXEC | extra));
}

TEST_CASE("Volume::Create writes a MAC'd config and a root dir id; Open verifies them",
          "[fs][volume]") {
  TempDir dir;
  FakeDataKeySource keys;
  auto created = Volume::Create(dir.path(), FakeDataKeySource::kAlias, &keys, kAdmin);
  REQUIRE(created.ok());
  const Volume& v = **created;
  CHECK(v.config().key_id == FakeDataKeySource::kAlias);
  CHECK(v.config().HasFeature(format::kFeatureLongNames));
  CHECK(keys.last_context() == format::NameKeyContext(v.id()));
  CHECK(ModeOf(dir.File("kmsfs.conf")) == 0400);
  CHECK(ModeOf(dir.File("kmsfs.dirid")) == 0400);
  CHECK(ReadText(dir.File("kmsfs.dirid")).size() == 16);
  CHECK(::access(dir.File("kmsfs.conf.tmp").c_str(), F_OK) != 0);
  CHECK(v.FileContext(testing::IdFromSeed(3)) ==
        format::FileDekContext(v.id(), testing::IdFromSeed(3)));

  auto opened = Volume::Open(dir.path(), &keys, kAdmin);
  REQUIRE(opened.ok());
  CHECK((*opened)->config() == v.config());
  CHECK((*opened)->root_dir_id() == v.root_dir_id());
  // The same name key: names written before the remount decrypt after it.
  auto name = v.names().EncryptName(v.root_dir_id(), "hello.txt");
  CHECK((*opened)->names().DecryptName(v.root_dir_id(), name->backing_name, "").value() ==
        "hello.txt");
  CHECK(keys.decrypt_calls() == 1);

  SECTION("info without keys") {
    auto cfg = Volume::ReadConfigUnverified(dir.path());
    REQUIRE(cfg.ok());
    CHECK(*cfg == v.config());
  }
  SECTION("whitespace changes do not matter: the MAC covers the canonical form") {
    std::string json = ReadText(dir.File("kmsfs.conf"));
    json.insert(1, "\n   ");
    WriteText(dir.File("kmsfs.conf"), json);
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).ok());
  }
  SECTION("policy and key state reach the mount") {
    keys.DenyUid(0);
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).error().code() == Code::kPermissionDenied);
    keys.AllowAll();
    keys.SetDisabled(true);
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).error().code() == Code::kKeyUnavailable);
  }
  SECTION("the root dir id is checked") {
    ::unlink(dir.File("kmsfs.dirid").c_str());
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).error().code() == Code::kCorrupt);
  }
}

TEST_CASE("an edited kmsfs.conf does not mount", "[fs][volume][tamper]") {
  TempDir dir;
  TempDir other_dir;
  FakeDataKeySource keys;
  auto v = Volume::Create(dir.path(), FakeDataKeySource::kKeyId, &keys, kAdmin);
  REQUIRE(v.ok());
  auto other = Volume::Create(other_dir.path(), FakeDataKeySource::kKeyId, &keys, kAdmin);
  REQUIRE(other.ok());
  const format::VolumeConfig original = (*v)->config();

  auto open_with = [&](format::VolumeConfig edited) {
    WriteText(dir.File("kmsfs.conf"), format::SerializeVolumeConfig(edited).value());
    return Volume::Open(dir.path(), &keys, kAdmin);
  };
  auto expect_modified = [&](const format::VolumeConfig& edited) {
    auto r = open_with(edited);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code() == Code::kCorrupt);
    return r.error().message();
  };

  format::VolumeConfig c = original;
  SECTION("KeyId: new files would be wrapped under another key") {
    c.key_id = "alias/attacker";
    CHECK(expect_modified(c).find("modified") != std::string::npos);
  }
  SECTION("Features") {
    c.features.erase(format::kFeatureLongNames);
    CHECK(expect_modified(c).find("modified") != std::string::npos);
  }
  SECTION("CreatedAt") {
    c.created_at = "2001-01-01T00:00:00Z";
    CHECK(expect_modified(c).find("modified") != std::string::npos);
  }
  SECTION("Mac") {
    c.mac[5] ^= 1;
    CHECK(expect_modified(c).find("modified") != std::string::npos);
  }
  SECTION("VolumeId: the name key's wrap context names the volume, so it does not unwrap") {
    c.volume_id[0] ^= 1;
    expect_modified(c);
  }
  SECTION("NameKeyBlob from another volume") {
    c.name_key_blob = (*other)->config().name_key_blob;
    expect_modified(c);
  }
  SECTION("NameKeyBlob byte flipped") {
    c.name_key_blob[c.name_key_blob.size() - 1] ^= 1;
    expect_modified(c);
  }
  SECTION("BlockSize") {
    std::string json = format::SerializeVolumeConfig(c).value();
    const auto at = json.find("\"BlockSize\": 4096");
    REQUIRE(at != std::string::npos);
    json.replace(at, 17, "\"BlockSize\": 8192");
    WriteText(dir.File("kmsfs.conf"), json);
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).error().code() == Code::kCorrupt);
  }
  SECTION("Format 2 is a newer kmsfs, not corruption") {
    std::string json = format::SerializeVolumeConfig(c).value();
    const auto at = json.find("\"Format\": 1");
    REQUIRE(at != std::string::npos);
    json.replace(at, 11, "\"Format\": 2");
    WriteText(dir.File("kmsfs.conf"), json);
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).error().code() == Code::kFailedPrecondition);
  }
  SECTION("garbage, empty, oversized") {
    WriteText(dir.File("kmsfs.conf"), "{");
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).error().code() == Code::kCorrupt);
    WriteText(dir.File("kmsfs.conf"), "");
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).error().code() == Code::kCorrupt);
    WriteText(dir.File("kmsfs.conf"), std::string(format::kMaxVolumeConfigSize + 1, ' '));
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).error().code() == Code::kCorrupt);
  }
  SECTION("unchanged, it still opens") { CHECK(open_with(c).ok()); }
}

TEST_CASE("Volume::Create refuses what it should", "[fs][volume]") {
  TempDir dir;
  FakeDataKeySource keys;
  SECTION("a missing directory") {
    CHECK(Volume::Create(dir.File("nope"), FakeDataKeySource::kKeyId, &keys, kAdmin)
              .error()
              .code() == Code::kNotFound);
  }
  SECTION("a non-empty directory") {
    WriteText(dir.File("existing"), "x");
    CHECK(Volume::Create(dir.path(), FakeDataKeySource::kKeyId, &keys, kAdmin).error().code() ==
          Code::kFailedPrecondition);
    CHECK(keys.generate_calls() == 0);
  }
  SECTION("a bad key id") {
    CHECK(Volume::Create(dir.path(), "not a key!", &keys, kAdmin).error().code() ==
          Code::kInvalidArgument);
  }
  SECTION("a denied key leaves nothing behind") {
    keys.DenyUid(0);
    CHECK(Volume::Create(dir.path(), FakeDataKeySource::kKeyId, &keys, kAdmin).error().code() ==
          Code::kPermissionDenied);
    CHECK(::access(dir.File("kmsfs.conf").c_str(), F_OK) != 0);
    CHECK(::access(dir.File("kmsfs.dirid").c_str(), F_OK) != 0);
  }
  SECTION("an unknown key") {
    CHECK(Volume::Create(dir.path(), "alias/none", &keys, kAdmin).error().code() ==
          Code::kNotFound);
  }
  SECTION("Open of something that is not a volume") {
    CHECK(Volume::Open(dir.path(), &keys, kAdmin).error().code() == Code::kNotFound);
    CHECK(Volume::ReadConfigUnverified(dir.path()).error().code() == Code::kNotFound);
  }
}

TEST_CASE("dir ids: created once, read back, strictly checked", "[fs][dirid]") {
  TempDir dir;
  UniqueFd fd = OpenDir(dir.path(), O_RDONLY);
  REQUIRE(fd.valid());
  CHECK(ReadDirId(fd.get()).error().code() == Code::kCorrupt);  // every directory needs one
  auto id = CreateDirId(fd.get());
  REQUIRE(id.ok());
  CHECK(*id != format::Id128{});
  CHECK(ReadDirId(fd.get()).value() == *id);
  CHECK(ModeOf(dir.File("kmsfs.dirid")) == 0400);
  CHECK(CreateDirId(fd.get()).error().code() == Code::kAlreadyExists);
  CHECK(ReadDirId(fd.get()).value() == *id);

  SECTION("through an O_PATH descriptor, as the FUSE layer holds directories") {
    UniqueFd path_fd = OpenDir(dir.path(), O_PATH);
    REQUIRE(path_fd.valid());
    CHECK(ReadDirId(path_fd.get()).value() == *id);
    ::mkdir(dir.File("sub").c_str(), 0700);
    UniqueFd sub = OpenDir(dir.File("sub"), O_PATH);
    auto sub_id = CreateDirId(sub.get());
    REQUIRE(sub_id.ok());
    CHECK(*sub_id != *id);
    CHECK(ReadDirId(sub.get()).value() == *sub_id);
  }
  SECTION("a stale temp file from a crash is replaced") {
    ::mkdir(dir.File("sub").c_str(), 0700);
    WriteText(dir.File("sub/kmsfs.dirid.tmp"), "partial");
    UniqueFd sub = OpenDir(dir.File("sub"), O_RDONLY);
    REQUIRE(CreateDirId(sub.get()).ok());
    CHECK(::access(dir.File("sub/kmsfs.dirid.tmp").c_str(), F_OK) != 0);
  }
  SECTION("wrong size, all zero, not a regular file, a symlink") {
    const std::string f = dir.File("kmsfs.dirid");
    WriteText(f, std::string(15, 'x'));
    CHECK(ReadDirId(fd.get()).error().code() == Code::kCorrupt);
    WriteText(f, std::string(17, 'x'));
    CHECK(ReadDirId(fd.get()).error().code() == Code::kCorrupt);
    WriteText(f, std::string(16, '\0'));
    CHECK(ReadDirId(fd.get()).error().code() == Code::kCorrupt);
    ::unlink(f.c_str());
    ::mkdir(f.c_str(), 0700);
    CHECK(ReadDirId(fd.get()).error().code() == Code::kCorrupt);
    ::rmdir(f.c_str());
    WriteText(dir.File("target"), std::string(16, 'x'));
    REQUIRE(::symlink("target", f.c_str()) == 0);
    CHECK(ReadDirId(fd.get()).error().code() == Code::kCorrupt);
  }
}

TEST_CASE("ReadSmallFile bounds what it reads", "[fs][smallfile]") {
  TempDir dir;
  UniqueFd fd = OpenDir(dir.path(), O_RDONLY);
  WriteText(dir.File("f"), "12345");
  CHECK(ReadSmallFile(fd.get(), "f", 5).value() == Bytes{'1', '2', '3', '4', '5'});
  CHECK(ReadSmallFile(fd.get(), "f", 4).error().code() == Code::kCorrupt);
  CHECK(ReadSmallFile(fd.get(), "missing", 4).error().code() == Code::kNotFound);
  REQUIRE(WriteNewFileAtomically(fd.get(), "g", AsBytes("abc"), 0400).ok());
  CHECK(ReadSmallFile(fd.get(), "g", 10).value() == Bytes{'a', 'b', 'c'});
  CHECK(WriteNewFileAtomically(fd.get(), "g", AsBytes("x"), 0400).code() == Code::kAlreadyExists);
  CHECK(ReadSmallFile(fd.get(), "g", 10).value() == Bytes{'a', 'b', 'c'});
}

}  // namespace
}  // namespace kmsfs::fs
