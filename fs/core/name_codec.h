// NameCodec: encrypts file names, symlink targets and xattr values under the volume's name key.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"
#include "common/format/file_header.h"
#include "common/format/ids.h"

namespace kmsfs::fs {

// docs/format.md "Names": AES-256-SIV (key = HKDF(name key, "kmsfs/v1/names", 64)) with the
// parent directory's 16-byte dir id as AAD, so equal names in different directories differ;
// output base64url without padding; names whose encoding exceeds 255 bytes get a
// "kmsfs.longname.<sha256>" backing name plus a side file holding the full encoding.
// Symlink targets: SIV with AAD "symlink" (one component), base64url. Xattr values: AES-256-GCM
// (key = HKDF(name key, "kmsfs/v1/xattr")) with AAD = file id || xattr name, stored as
// nonce[12] | ciphertext | tag[16].
//
// Errors never contain plaintext names or values. Length errors are kInvalidArgument carrying
// the errno the FUSE layer should answer (ENAMETOOLONG, E2BIG) in sys_errno.
//
// Link tags: HMAC-SHA256 (key = HKDF(name key, "kmsfs/v1/links")) truncated to 16 bytes.
//
// Thread-safe: the SIV and GCM contexts are not, so one mutex serializes their use (names are
// not the hot path: one SIV call per lookup/readdir entry, microseconds). ConfigMac takes no
// lock. Owns the derived keys (wiped on destruction); the name key itself is not kept.
class NameCodec {
 public:
  // Longest symlink target: its encoding must fit the backing symlink (PATH_MAX - 1 = 4095
  // bytes), and base64url(16 + 3055 bytes) is 4095 characters.
  static constexpr size_t kMaxSymlinkTarget = 3055;
  // Longest xattr value: the stored form (+28 bytes) must fit XATTR_SIZE_MAX (65536).
  static constexpr size_t kMaxXattrValue = 65536 - 28;
  static constexpr size_t kMaxXattrName = 255;  // XATTR_NAME_MAX

  // `name_key` is the volume's 32-byte name key. `long_names` is the volume's "long-names"
  // feature: without it, names whose encoding exceeds 255 bytes are refused (ENAMETOOLONG) and
  // kmsfs.longname.* entries are corrupt. kInvalidArgument for a key of the wrong size.
  static Result<std::unique_ptr<NameCodec>> Create(const crypto::SecretBytes& name_key,
                                                   bool long_names = true);
  ~NameCodec();
  NameCodec(const NameCodec&) = delete;
  NameCodec& operator=(const NameCodec&) = delete;

  struct Encoded {
    std::string backing_name;  // what to create in the backing directory
    std::string long_content;  // non-empty iff backing_name is a long name: the side file's body
  };
  // kInvalidArgument for a name ValidatePlaintextName rejects (ENAMETOOLONG in sys_errno for
  // length), and for a long name in a volume without "long-names" (ENAMETOOLONG).
  Result<Encoded> EncryptName(const format::Id128& dir_id, std::string_view plaintext);
  // `long_content` is the side file's body for long names (empty otherwise); this checks that
  // SHA-256(long_content) is the digest in `backing_name`. kCorrupt if the name does not
  // authenticate in this directory or decrypts to "", ".", "..", or contains '/' or NUL.
  // kInvalidArgument for a reserved name that is not a long name (kmsfs.conf, kmsfs.dirid, side
  // files): those are never file names, and readdir must skip them (IsReservedBackingName).
  Result<std::string> DecryptName(const format::Id128& dir_id, std::string_view backing_name,
                                  std::string_view long_content);

  // kInvalidArgument for an empty target, one containing NUL, or one over kMaxSymlinkTarget
  // bytes (ENAMETOOLONG).
  Result<std::string> EncryptSymlink(std::string_view target);
  // kCorrupt unless `stored` is a target EncryptSymlink produced under this volume's key.
  Result<std::string> DecryptSymlink(std::string_view stored);

  // kInvalidArgument for an empty or over-long name, or a value over kMaxXattrValue (E2BIG).
  Result<Bytes> EncryptXattr(const format::Id128& file_id, std::string_view name, ByteSpan value);
  // kCorrupt unless `stored` was produced for this file id and attribute name.
  Result<Bytes> DecryptXattr(const format::Id128& file_id, std::string_view name, ByteSpan stored);

  // HMAC-SHA256 over `data` with HKDF(name key, "kmsfs/v1/config-mac"): the volume config MAC.
  // Compare with crypto::ConstantTimeEqual.
  std::array<uint8_t, 32> ConfigMac(ByteSpan data) const;

  // HMAC-SHA256 over `mac_input` (format::LinkMacInput) with HKDF(name key, "kmsfs/v1/links"),
  // truncated to 16 bytes: a file header's link tag (docs/format.md §6.2). No lock.
  format::LinkTag LinkTag(ByteSpan mac_input) const;

  bool long_names() const;

 private:
  struct Impl;
  explicit NameCodec(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kmsfs::fs
