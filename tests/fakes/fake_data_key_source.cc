#include "tests/fakes/fake_data_key_source.h"

#include "common/crypto/random.h"
#include "common/crypto/wrap.h"

namespace kmsfs::fakes {
namespace {

crypto::MasterKey TestMasterKey() {
  crypto::MasterKey key;
  auto bytes = key.mutable_span();
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(0xA0 + i);
  return key;
}

}  // namespace

FakeDataKeySource::FakeDataKeySource() : master_(TestMasterKey()) {}

Status FakeDataKeySource::CheckLocked(const fs::Requester& who) const {
  if (unavailable_) return Error(Code::kUnavailable, "DependencyTimeoutException: keyd is down");
  if (denied_paths_.count(who.path) != 0 || denied_uids_.count(who.uid) != 0) {
    return Error(Code::kPermissionDenied, "AccessDeniedException: denied by the test policy");
  }
  if (disabled_) return Error(Code::kKeyUnavailable, "DisabledException: key is disabled");
  return Status::Ok();
}

Result<fs::NewDataKey> FakeDataKeySource::GenerateDataKey(const std::string& key_id,
                                                          const format::EncryptionContext& ctx,
                                                          const fs::Requester& who) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++generate_calls_;
    last_requester_ = who;
    last_context_ = ctx;
    KMSFS_RETURN_IF_ERROR(CheckLocked(who));
  }
  if (key_id != kKeyId && key_id != kAlias) {
    return Error(Code::kNotFound, "NotFoundException: no such key");
  }
  fs::NewDataKey key;
  key.plaintext = crypto::RandomSecret(32);
  KMSFS_ASSIGN_OR_RETURN(key.wrapped,
                         crypto::WrapKey(master_, kKeyId, kKeyVersion, ctx, key.plaintext.span()));
  return key;
}

Result<crypto::SecretBytes> FakeDataKeySource::Decrypt(ByteSpan wrapped,
                                                       const format::EncryptionContext& ctx,
                                                       const fs::Requester& who) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++decrypt_calls_;
    last_requester_ = who;
    last_context_ = ctx;
    KMSFS_RETURN_IF_ERROR(CheckLocked(who));
  }
  auto key = crypto::UnwrapKey(master_, wrapped, ctx);
  if (!key.ok()) {
    if (key.error().code() == Code::kCorrupt) {
      return Error(Code::kCorrupt, "InvalidCiphertextException: blob does not authenticate");
    }
    return key.error();
  }
  return std::move(key).value();
}

void FakeDataKeySource::DenyPath(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  denied_paths_.insert(path);
}
void FakeDataKeySource::DenyUid(uid_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  denied_uids_.insert(uid);
}
void FakeDataKeySource::AllowAll() {
  std::lock_guard<std::mutex> lock(mu_);
  denied_paths_.clear();
  denied_uids_.clear();
}
void FakeDataKeySource::SetDisabled(bool disabled) {
  std::lock_guard<std::mutex> lock(mu_);
  disabled_ = disabled;
}
void FakeDataKeySource::SetUnavailable(bool unavailable) {
  std::lock_guard<std::mutex> lock(mu_);
  unavailable_ = unavailable;
}
int FakeDataKeySource::generate_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generate_calls_;
}
int FakeDataKeySource::decrypt_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return decrypt_calls_;
}
fs::Requester FakeDataKeySource::last_requester() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_requester_;
}
format::EncryptionContext FakeDataKeySource::last_context() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_context_;
}

}  // namespace kmsfs::fakes
