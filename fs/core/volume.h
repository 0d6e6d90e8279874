// Volume: creating and opening a cipher directory (config, name key, root dir id).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "common/base/status.h"
#include "common/format/encryption_context.h"
#include "common/format/ids.h"
#include "common/format/volume_config.h"
#include "fs/core/data_key_source.h"
#include "fs/core/name_codec.h"

namespace kmsfs::fs {

// An opened volume: its verified config, name codec and root directory id. Immutable after
// Open; thread-safe. `keys` is used only during Create/Open and is not kept.
class Volume {
 public:
  // `kmsfs init`: CIPHERDIR must exist and be empty (kNotFound / kFailedPrecondition). Checks
  // the key id syntax (kInvalidArgument), asks `keys` for a name key (GenerateDataKey with
  // context {kmsfs:purpose: names, kmsfs:volume: id}; its errors pass through), writes the root
  // kmsfs.dirid and then kmsfs.conf (0400, MAC'd), each atomically and fsynced with the
  // directory. kmsfs.conf is written last, so an interrupted init never looks like a volume.
  static Result<std::unique_ptr<Volume>> Create(const std::string& cipherdir,
                                                const std::string& key_id, DataKeySource* keys,
                                                const Requester& who);
  // Mount order of format.md §5: parse kmsfs.conf strictly, unwrap the name key through `keys`
  // with NameKeyContext(VolumeId), derive the MAC key, verify Mac in constant time, and only
  // then trust any field; then read the root kmsfs.dirid.
  // kNotFound if there is no kmsfs.conf (not a kmsfs volume); kFailedPrecondition for a newer
  // format or unknown feature; kCorrupt for a malformed config, a name key blob that does not
  // unwrap (as keyd reports it), "volume config was modified" on a MAC mismatch, or a bad root
  // dir id; keyd's policy and key-state errors pass through.
  static Result<std::unique_ptr<Volume>> Open(const std::string& cipherdir, DataKeySource* keys,
                                              const Requester& who);
  // Reads and parses kmsfs.conf without keys (for `kmsfs info`): unauthenticated.
  static Result<format::VolumeConfig> ReadConfigUnverified(const std::string& cipherdir);

  const std::string& cipherdir() const { return cipherdir_; }
  const format::VolumeConfig& config() const { return config_; }
  const format::Id128& id() const { return config_.volume_id; }
  const format::Id128& root_dir_id() const { return root_dir_id_; }
  NameCodec& names() const { return *names_; }
  // The encryption context of a file's DEK wrap: {kmsfs:file: hex, kmsfs:volume: hex}.
  format::EncryptionContext FileContext(const format::Id128& file_id) const;
  // Feature "header-links": file headers carry link tags, and opens check them.
  bool links_enabled() const { return links_enabled_; }
  // The link tag of the entry `backing_name` in the directory `dir_id` naming file `file_id`
  // (docs/format.md §6.2). Needs no keyd: the link key is derived from the name key at Open.
  // kInvalidArgument for a backing name outside 1..255 bytes.
  Result<format::LinkTag> LinkTagFor(const format::Id128& file_id, const format::Id128& dir_id,
                                     std::string_view backing_name) const;

 private:
  Volume(std::string cipherdir, format::VolumeConfig config, std::unique_ptr<NameCodec> names,
         const format::Id128& root_dir_id)
      : cipherdir_(std::move(cipherdir)),
        config_(std::move(config)),
        names_(std::move(names)),
        root_dir_id_(root_dir_id),
        links_enabled_(config_.HasFeature(format::kFeatureHeaderLinks)) {}
  const std::string cipherdir_;
  const format::VolumeConfig config_;
  const std::unique_ptr<NameCodec> names_;
  const format::Id128 root_dir_id_;
  const bool links_enabled_;
};

}  // namespace kmsfs::fs
