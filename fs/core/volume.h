// Volume: creating and opening a cipher directory (config, name key, root dir id).
#pragma once

#include <memory>
#include <string>

#include "common/base/status.h"
#include "common/format/volume_config.h"
#include "fs/core/data_key_source.h"
#include "fs/core/name_codec.h"

namespace kmsfs::fs {

// An opened volume: its verified config and name codec. Immutable after Open; thread-safe.
class Volume {
 public:
  // `kmsfs init`: CIPHERDIR must exist and be empty. Asks `keys` for a name key
  // (GenerateDataKey with context {kmsfs:volume: id, kmsfs:purpose: names}), writes kmsfs.conf
  // (0400, MAC'd) and the root kmsfs.dirid, fsyncs both and the directory.
  static Result<std::unique_ptr<Volume>> Create(const std::string& cipherdir,
                                                const std::string& key_id, DataKeySource* keys,
                                                const Requester& who);
  // Parses kmsfs.conf, unwraps the name key through `keys` and verifies the MAC.
  // kCorrupt if the config was edited, kNotFound if it is not a kmsfs volume.
  static Result<std::unique_ptr<Volume>> Open(const std::string& cipherdir, DataKeySource* keys,
                                              const Requester& who);
  // Reads and parses kmsfs.conf without keys (for `kmsfs info`): unauthenticated.
  static Result<format::VolumeConfig> ReadConfigUnverified(const std::string& cipherdir);

  const format::VolumeConfig& config() const { return config_; }
  const format::Id128& id() const { return config_.volume_id; }
  NameCodec& names() const { return *names_; }
  // The encryption context of a file's DEK wrap: {kmsfs:volume: hex, kmsfs:file: hex}.
  format::EncryptionContext FileContext(const format::Id128& file_id) const;

 private:
  Volume(format::VolumeConfig config, std::unique_ptr<NameCodec> names)
      : config_(std::move(config)), names_(std::move(names)) {}
  format::VolumeConfig config_;
  std::unique_ptr<NameCodec> names_;
};

}  // namespace kmsfs::fs
