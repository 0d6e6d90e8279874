#include "fs/keysource/keyd_data_key_source.h"

#include <optional>
#include <utility>

#include "common/base/check.h"
#include "common/ipc/message.h"

namespace kmsfs::fs {
namespace {

constexpr size_t kDataKeyLen = 32;

std::optional<ipc::OnBehalfOf> OnBehalfOfFor(const Requester& who) {
  if (who.pid == 0) return std::nullopt;
  ipc::OnBehalfOf obo;
  obo.uid = static_cast<uint32_t>(who.uid);
  obo.gid = static_cast<uint32_t>(who.gid);
  obo.pid = static_cast<int32_t>(who.pid);
  obo.path = who.path;
  return obo;
}

Status CheckKeyLen(const crypto::SecretBytes& key) {
  if (key.size() != kDataKeyLen) {
    return Error(Code::kInternal, "keyd returned a data key that is not 32 bytes");
  }
  return Status::Ok();
}

}  // namespace

KeydDataKeySource::KeydDataKeySource(ipc::KeydClient* client) : client_(client) {
  KMSFS_CHECK(client_ != nullptr);
}

Result<NewDataKey> KeydDataKeySource::GenerateDataKey(const std::string& key_id,
                                                      const format::EncryptionContext& ctx,
                                                      const Requester& who) {
  const auto obo = OnBehalfOfFor(who);
  KMSFS_ASSIGN_OR_RETURN(ipc::DataKey key,
                         client_->GenerateDataKey(key_id, ctx, obo ? &*obo : nullptr));
  KMSFS_RETURN_IF_ERROR(CheckKeyLen(key.plaintext));
  NewDataKey out;
  out.plaintext = std::move(key.plaintext);
  out.wrapped = std::move(key.ciphertext_blob);
  return out;
}

Result<crypto::SecretBytes> KeydDataKeySource::Decrypt(ByteSpan wrapped,
                                                       const format::EncryptionContext& ctx,
                                                       const Requester& who) {
  const auto obo = OnBehalfOfFor(who);
  KMSFS_ASSIGN_OR_RETURN(ipc::DecryptedData data,
                         client_->Decrypt(wrapped, ctx, obo ? &*obo : nullptr));
  KMSFS_RETURN_IF_ERROR(CheckKeyLen(data.plaintext));
  return std::move(data.plaintext);
}

}  // namespace kmsfs::fs
