// NameCodec: encrypts file names, symlink targets and xattr values under the volume's name key.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"
#include "common/format/ids.h"

namespace kmsfs::fs {

// docs/format.md "Names": AES-256-SIV (key = HKDF(name key, "kmsfs/v1/names", 64)) with the
// parent directory's 16-byte dir id as AAD, so equal names in different directories differ;
// output base64url without padding; names whose encoding exceeds 255 bytes get a
// "kmsfs.longname.<sha256>" backing name plus a side file holding the full encoding.
// Symlink targets: SIV with AAD "symlink" (one component), base64url. Xattr values: AES-256-GCM
// (key = HKDF(name key, "kmsfs/v1/xattr")) with AAD = file id || xattr name.
//
// Thread-safe (internally one cipher context per thread or a lock). Owns derived keys.
class NameCodec {
 public:
  static Result<std::unique_ptr<NameCodec>> Create(const crypto::SecretBytes& name_key);
  ~NameCodec();

  struct Encoded {
    std::string backing_name;  // what to create in the backing directory
    std::string long_content;  // non-empty iff backing_name is a long name: the side file's body
  };
  // kInvalidArgument (ENAMETOOLONG/EINVAL) for a name ValidatePlaintextName rejects.
  Result<Encoded> EncryptName(const format::Id128& dir_id, std::string_view plaintext);
  // `long_content` is the side file's body for long names (empty otherwise). kCorrupt if the
  // name does not authenticate in this directory or decrypts to ".", "..", or contains '/'/NUL.
  Result<std::string> DecryptName(const format::Id128& dir_id, std::string_view backing_name,
                                  std::string_view long_content);

  Result<std::string> EncryptSymlink(std::string_view target);
  Result<std::string> DecryptSymlink(std::string_view stored);

  Result<Bytes> EncryptXattr(const format::Id128& file_id, std::string_view name, ByteSpan value);
  Result<Bytes> DecryptXattr(const format::Id128& file_id, std::string_view name, ByteSpan stored);

  // HMAC-SHA256 over `data` with HKDF(name key, "kmsfs/v1/config-mac"): the volume config MAC.
  std::array<uint8_t, 32> ConfigMac(ByteSpan data) const;

 private:
  struct Impl;
  explicit NameCodec(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kmsfs::fs
