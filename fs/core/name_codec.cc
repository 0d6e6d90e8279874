#include "fs/core/name_codec.h"

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <utility>
#include <vector>

#include "common/crypto/aead.h"
#include "common/crypto/hash.h"
#include "common/crypto/hkdf.h"
#include "common/crypto/random.h"
#include "common/crypto/siv.h"
#include "common/format/base64.h"
#include "common/format/name_encoding.h"

namespace kmsfs::fs {
namespace {

constexpr char kNamesInfo[] = "kmsfs/v1/names";
constexpr char kConfigMacInfo[] = "kmsfs/v1/config-mac";
constexpr char kXattrInfo[] = "kmsfs/v1/xattr";
constexpr char kLinksInfo[] = "kmsfs/v1/links";
// One SIV AAD component of 7 bytes: it can never equal a 16-byte dir id (format.md §8.6).
constexpr std::string_view kSymlinkAad = "symlink";
constexpr size_t kMaxStoredSymlink = 4095;  // PATH_MAX - 1
constexpr size_t kNonceLen = crypto::kGcmNonceLen;
constexpr size_t kTagLen = crypto::kGcmTagLen;

static_assert(format::Base64UrlEncodedLen(crypto::kSivTagLen + NameCodec::kMaxSymlinkTarget) ==
              kMaxStoredSymlink);
static_assert(format::Base64UrlEncodedLen(crypto::kSivTagLen + NameCodec::kMaxSymlinkTarget + 1) >
              kMaxStoredSymlink);

Result<crypto::SecretBytes> Derive(const crypto::SecretBytes& key, std::string_view info,
                                   size_t len) {
  return crypto::Hkdf(key.span(), {}, AsBytes(info), len);
}

std::string ToString(const Bytes& b) { return std::string(AsChars(b)); }

}  // namespace

struct NameCodec::Impl {
  Impl(crypto::Aes256Siv s, crypto::Aes256Gcm x, crypto::SecretBytes m, crypto::SecretBytes k,
       bool l)
      : siv(std::move(s)),
        xattr(std::move(x)),
        mac_key(std::move(m)),
        link_key(std::move(k)),
        long_names(l) {}
  std::mutex mu;
  crypto::Aes256Siv siv;    // guarded by mu
  crypto::Aes256Gcm xattr;  // guarded by mu
  const crypto::SecretBytes mac_key;
  const crypto::SecretBytes link_key;
  const bool long_names;
};

NameCodec::NameCodec(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NameCodec::~NameCodec() = default;

Result<std::unique_ptr<NameCodec>> NameCodec::Create(const crypto::SecretBytes& name_key,
                                                     bool long_names) {
  if (name_key.size() != 32) return Error(Code::kInvalidArgument, "name key must be 32 bytes");
  KMSFS_ASSIGN_OR_RETURN(crypto::SecretBytes siv_key,
                         Derive(name_key, kNamesInfo, crypto::kSivKeyLen));
  KMSFS_ASSIGN_OR_RETURN(crypto::SecretBytes mac_key, Derive(name_key, kConfigMacInfo, 32));
  KMSFS_ASSIGN_OR_RETURN(crypto::SecretBytes xattr_key,
                         Derive(name_key, kXattrInfo, crypto::kGcmKeyLen));
  KMSFS_ASSIGN_OR_RETURN(crypto::SecretBytes link_key, Derive(name_key, kLinksInfo, 32));
  // The cipher contexts hold their own key schedules; the derived bytes are wiped as the
  // SecretBytes go out of scope.
  KMSFS_ASSIGN_OR_RETURN(crypto::Aes256Siv siv, crypto::Aes256Siv::Create(siv_key.span()));
  KMSFS_ASSIGN_OR_RETURN(crypto::Aes256Gcm xattr, crypto::Aes256Gcm::Create(xattr_key.span()));
  return std::unique_ptr<NameCodec>(new NameCodec(std::make_unique<Impl>(
      std::move(siv), std::move(xattr), std::move(mac_key), std::move(link_key), long_names)));
}

bool NameCodec::long_names() const { return impl_->long_names; }

Result<NameCodec::Encoded> NameCodec::EncryptName(const format::Id128& dir_id,
                                                  std::string_view plaintext) {
  if (Status st = format::ValidatePlaintextName(plaintext); !st.ok()) {
    const int err = plaintext.size() > format::kMaxNameLen ? ENAMETOOLONG : EINVAL;
    return Error(Code::kInvalidArgument, st.error().message(), err);
  }
  Bytes sealed;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    KMSFS_ASSIGN_OR_RETURN(sealed, impl_->siv.Seal({ByteSpan(dir_id)}, AsBytes(plaintext)));
  }
  Encoded out;
  out.backing_name = format::EncodeName(sealed);
  if (!format::NeedsLongName(out.backing_name)) return out;
  if (!impl_->long_names) {
    return Error(Code::kInvalidArgument,
                 "name: encrypted form exceeds 255 bytes and the volume has no long-names",
                 ENAMETOOLONG);
  }
  const crypto::Sha256Digest digest = crypto::Sha256(AsBytes(out.backing_name));
  out.long_content = std::move(out.backing_name);
  out.backing_name = format::LongNameFor(digest);
  return out;
}

Result<std::string> NameCodec::DecryptName(const format::Id128& dir_id,
                                           std::string_view backing_name,
                                           std::string_view long_content) {
  std::string_view encoded = backing_name;
  if (format::IsReservedBackingName(backing_name)) {
    auto digest = format::ParseLongName(backing_name);
    if (!digest.ok()) {
      return Error(Code::kInvalidArgument, "name: a reserved kmsfs.* entry is not a file name");
    }
    if (!impl_->long_names) {
      return Error(Code::kCorrupt, "name: long name in a volume without long-names");
    }
    KMSFS_ASSIGN_OR_RETURN(std::string side, format::ParseLongNameSideFile(AsBytes(long_content)));
    const crypto::Sha256Digest actual = crypto::Sha256(AsBytes(side));
    if (!crypto::ConstantTimeEqual(actual, *digest)) {
      return Error(Code::kCorrupt, "name: long name side file does not match its entry");
    }
    encoded = long_content;
  } else if (!long_content.empty()) {
    return Error(Code::kInvalidArgument, "name: a short name has no side file");
  }
  KMSFS_ASSIGN_OR_RETURN(Bytes sealed, format::DecodeBackingName(encoded));
  Result<Bytes> plain = Error(Code::kInternal, "unset");
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    plain = impl_->siv.Open({ByteSpan(dir_id)}, sealed);
  }
  if (!plain.ok()) {
    if (plain.error().code() == Code::kCorrupt) {
      return Error(Code::kCorrupt, "name: does not authenticate in this directory");
    }
    return plain.error();
  }
  std::string name = ToString(*plain);
  KMSFS_RETURN_IF_ERROR(format::ValidateDecryptedName(name));
  return name;
}

Result<std::string> NameCodec::EncryptSymlink(std::string_view target) {
  if (target.empty()) return Error(Code::kInvalidArgument, "symlink target: empty", EINVAL);
  if (target.find('\0') != std::string_view::npos) {
    return Error(Code::kInvalidArgument, "symlink target: contains NUL", EINVAL);
  }
  if (target.size() > kMaxSymlinkTarget) {
    return Error(Code::kInvalidArgument, "symlink target: too long to store encrypted",
                 ENAMETOOLONG);
  }
  Bytes sealed;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    KMSFS_ASSIGN_OR_RETURN(sealed, impl_->siv.Seal({AsBytes(kSymlinkAad)}, AsBytes(target)));
  }
  return format::Base64UrlEncode(sealed);
}

Result<std::string> NameCodec::DecryptSymlink(std::string_view stored) {
  if (stored.size() > kMaxStoredSymlink) return Error(Code::kCorrupt, "symlink target: too long");
  auto sealed = format::Base64UrlDecode(stored);
  if (!sealed.ok()) return Error(Code::kCorrupt, "symlink target: not base64url");
  if (sealed->size() <= crypto::kSivTagLen)
    return Error(Code::kCorrupt, "symlink target: too short");
  Result<Bytes> plain = Error(Code::kInternal, "unset");
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    plain = impl_->siv.Open({AsBytes(kSymlinkAad)}, *sealed);
  }
  if (!plain.ok()) {
    if (plain.error().code() == Code::kCorrupt) {
      return Error(Code::kCorrupt, "symlink target: does not authenticate");
    }
    return plain.error();
  }
  std::string target = ToString(*plain);
  if (target.find('\0') != std::string::npos) {
    return Error(Code::kCorrupt, "symlink target: contains NUL");
  }
  return target;
}

namespace {

Status CheckXattrName(std::string_view name) {
  if (name.empty() || name.size() > NameCodec::kMaxXattrName) {
    return Error(Code::kInvalidArgument, "xattr name: empty or longer than 255 bytes", ERANGE);
  }
  return Status::Ok();
}

Bytes XattrAad(const format::Id128& file_id, std::string_view name) {
  Bytes aad(file_id.begin(), file_id.end());
  aad.insert(aad.end(), name.begin(), name.end());
  return aad;
}

}  // namespace

Result<Bytes> NameCodec::EncryptXattr(const format::Id128& file_id, std::string_view name,
                                      ByteSpan value) {
  KMSFS_RETURN_IF_ERROR(CheckXattrName(name));
  if (value.size() > kMaxXattrValue) {
    return Error(Code::kInvalidArgument, "xattr value: too large to store encrypted", E2BIG);
  }
  Bytes out(kNonceLen + value.size() + kTagLen);
  std::span<uint8_t> nonce(out.data(), kNonceLen);
  crypto::RandomBytes(nonce);
  const Bytes aad = XattrAad(file_id, name);
  std::lock_guard<std::mutex> lock(impl_->mu);
  KMSFS_RETURN_IF_ERROR(impl_->xattr.Seal(nonce, aad, value, {out.data() + kNonceLen, value.size()},
                                          {out.data() + kNonceLen + value.size(), kTagLen}));
  return out;
}

Result<Bytes> NameCodec::DecryptXattr(const format::Id128& file_id, std::string_view name,
                                      ByteSpan stored) {
  KMSFS_RETURN_IF_ERROR(CheckXattrName(name));
  if (stored.size() < kNonceLen + kTagLen || stored.size() > kMaxXattrValue + kNonceLen + kTagLen) {
    return Error(Code::kCorrupt, "xattr value: stored length out of range");
  }
  const size_t len = stored.size() - kNonceLen - kTagLen;
  Bytes out(len);
  const Bytes aad = XattrAad(file_id, name);
  Status st;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    st = impl_->xattr.Open(stored.first(kNonceLen), aad, stored.subspan(kNonceLen, len),
                           stored.subspan(kNonceLen + len), out);
  }
  if (!st.ok()) {
    if (st.code() == Code::kCorrupt)
      return Error(Code::kCorrupt, "xattr value: does not authenticate");
    return st.error();
  }
  return out;
}

std::array<uint8_t, 32> NameCodec::ConfigMac(ByteSpan data) const {
  return crypto::HmacSha256(impl_->mac_key.span(), data);
}

format::LinkTag NameCodec::LinkTag(ByteSpan mac_input) const {
  const crypto::Sha256Digest mac = crypto::HmacSha256(impl_->link_key.span(), mac_input);
  format::LinkTag tag;
  std::copy_n(mac.begin(), tag.size(), tag.begin());
  return tag;
}

}  // namespace kmsfs::fs
