#include "fs/lifecycle/keyd_wrap_service.h"

#include "common/format/base64.h"

namespace kmsfs::fs::lifecycle {

Result<WrapService::Rewrapped> KeydWrapService::ReEncrypt(ByteSpan blob,
                                                          const format::EncryptionContext& context,
                                                          const std::string& key_id) {
  // Call rather than the typed helper: we also need the kmsfs extension KeyVersion.
  nlohmann::json params;
  params["CiphertextBlob"] = format::Base64Encode(blob);
  params["SourceEncryptionContext"] = context;
  params["DestinationKeyId"] = key_id;
  params["DestinationEncryptionContext"] = context;
  KMSFS_ASSIGN_OR_RETURN(nlohmann::json r, client_->Call(ipc::Op::kReEncrypt, std::move(params)));
  if (!r.contains("CiphertextBlob") || !r["CiphertextBlob"].is_string() ||
      !r.contains("KeyVersion") || !r["KeyVersion"].is_number_unsigned()) {
    return Error(Code::kInternal, "ReEncrypt answer lacks CiphertextBlob or KeyVersion");
  }
  KMSFS_ASSIGN_OR_RETURN(Bytes out, format::Base64Decode(r["CiphertextBlob"].get<std::string>()));
  return Rewrapped{std::move(out), r["KeyVersion"].get<uint32_t>()};
}

}  // namespace kmsfs::fs::lifecycle
