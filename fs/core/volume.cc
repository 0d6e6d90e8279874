#include "fs/core/volume.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/base/unique_fd.h"
#include "common/crypto/random.h"
#include "common/format/key_id.h"
#include "common/format/name_encoding.h"
#include "fs/core/dir_id.h"
#include "fs/core/small_file.h"

namespace kmsfs::fs {
namespace {

Result<UniqueFd> OpenCipherDir(const std::string& cipherdir) {
  UniqueFd fd(::open(cipherdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return Error(Code::kNotFound, "cipher directory does not exist", ENOENT);
    return Error::FromErrno("open cipher directory", errno);
  }
  return fd;
}

Status CheckEmpty(int dirfd) {
  // fdopendir takes ownership of its fd, so hand it a duplicate.
  const int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return Error::FromErrno("dup cipher directory fd", errno);
  DIR* dir = ::fdopendir(dup);
  if (dir == nullptr) {
    const int err = errno;
    ::close(dup);
    return Error::FromErrno("fdopendir cipher directory", err);
  }
  Status result;
  errno = 0;
  while (const struct dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    result = Error(Code::kFailedPrecondition, "cipher directory is not empty");
    break;
  }
  if (result.ok() && errno != 0) result = Error::FromErrno("readdir cipher directory", errno);
  ::closedir(dir);
  return result;
}

Result<format::VolumeConfig> ReadConfig(int dirfd) {
  auto json = ReadSmallFile(dirfd, format::kVolumeConfigName, format::kMaxVolumeConfigSize);
  if (!json.ok()) {
    if (json.error().code() == Code::kNotFound) {
      return Error(Code::kNotFound, "not a kmsfs volume: no kmsfs.conf");
    }
    if (json.error().code() == Code::kCorrupt) {
      return Error(Code::kCorrupt, "kmsfs.conf: " + json.error().message());
    }
    return json.error();
  }
  return format::ParseVolumeConfig(AsChars(*json));
}

}  // namespace

format::EncryptionContext Volume::FileContext(const format::Id128& file_id) const {
  return format::FileDekContext(config_.volume_id, file_id);
}

Result<format::LinkTag> Volume::LinkTagFor(const format::Id128& file_id,
                                           const format::Id128& dir_id,
                                           std::string_view backing_name) const {
  KMSFS_ASSIGN_OR_RETURN(Bytes input,
                         format::LinkMacInput(config_.volume_id, file_id, dir_id, backing_name));
  return names_->LinkTag(input);
}

Result<std::unique_ptr<Volume>> Volume::Create(const std::string& cipherdir,
                                               const std::string& key_id, DataKeySource* keys,
                                               const Requester& who) {
  KMSFS_CHECK(keys != nullptr);
  if (!format::IsValidKeyIdOrAlias(key_id)) {
    return Error(Code::kInvalidArgument, "key id: not a key id or alias/NAME");
  }
  KMSFS_ASSIGN_OR_RETURN(UniqueFd dir, OpenCipherDir(cipherdir));
  KMSFS_RETURN_IF_ERROR(CheckEmpty(dir.get()));

  format::VolumeConfig config;
  do {
    crypto::RandomBytes(config.volume_id);
  } while (config.volume_id == format::Id128{});
  KMSFS_ASSIGN_OR_RETURN(
      NewDataKey name_key,
      keys->GenerateDataKey(key_id, format::NameKeyContext(config.volume_id), who));
  if (name_key.plaintext.size() != 32) {
    return Error(Code::kInternal, "key source returned a name key that is not 32 bytes");
  }
  KMSFS_ASSIGN_OR_RETURN(auto names, NameCodec::Create(name_key.plaintext, /*long_names=*/true));

  config.key_id = key_id;
  config.features = {format::kFeatureInterleavedMetaV1, format::kFeatureLongNames,
                     format::kFeatureSivNames, format::kFeatureHeaderLinks};
  config.name_key_blob = std::move(name_key.wrapped);
  KMSFS_ASSIGN_OR_RETURN(config.created_at, format::Rfc3339Utc(std::time(nullptr)));
  KMSFS_ASSIGN_OR_RETURN(Bytes mac_input, format::VolumeConfigMacInput(config));
  config.mac = names->ConfigMac(mac_input);
  KMSFS_ASSIGN_OR_RETURN(std::string json, format::SerializeVolumeConfig(config));

  KMSFS_ASSIGN_OR_RETURN(format::Id128 root_id, CreateDirId(dir.get()));
  KMSFS_RETURN_IF_ERROR(
      WriteNewFileAtomically(dir.get(), format::kVolumeConfigName, AsBytes(json), 0400));
  return std::unique_ptr<Volume>(
      new Volume(cipherdir, std::move(config), std::move(names), root_id));
}

Result<std::unique_ptr<Volume>> Volume::Open(const std::string& cipherdir, DataKeySource* keys,
                                             const Requester& who) {
  KMSFS_CHECK(keys != nullptr);
  KMSFS_ASSIGN_OR_RETURN(UniqueFd dir, OpenCipherDir(cipherdir));
  KMSFS_ASSIGN_OR_RETURN(format::VolumeConfig config, ReadConfig(dir.get()));
  // The blob is bound to VolumeId by its context: an edited VolumeId fails here.
  KMSFS_ASSIGN_OR_RETURN(
      crypto::SecretBytes name_key,
      keys->Decrypt(config.name_key_blob, format::NameKeyContext(config.volume_id), who));
  if (name_key.size() != 32) return Error(Code::kCorrupt, "volume name key is not 32 bytes");
  KMSFS_ASSIGN_OR_RETURN(auto names,
                         NameCodec::Create(name_key, config.HasFeature(format::kFeatureLongNames)));
  KMSFS_ASSIGN_OR_RETURN(Bytes mac_input, format::VolumeConfigMacInput(config));
  const auto mac = names->ConfigMac(mac_input);
  if (!crypto::ConstantTimeEqual(mac, config.mac)) {
    return Error(Code::kCorrupt, "volume config was modified (MAC mismatch)");
  }
  KMSFS_ASSIGN_OR_RETURN(format::Id128 root_id, ReadDirId(dir.get()));
  return std::unique_ptr<Volume>(
      new Volume(cipherdir, std::move(config), std::move(names), root_id));
}

Result<format::VolumeConfig> Volume::ReadConfigUnverified(const std::string& cipherdir) {
  KMSFS_ASSIGN_OR_RETURN(UniqueFd dir, OpenCipherDir(cipherdir));
  return ReadConfig(dir.get());
}

}  // namespace kmsfs::fs
