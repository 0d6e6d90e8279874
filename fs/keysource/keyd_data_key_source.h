// KeydDataKeySource: the production DataKeySource, asking kmsfs-keyd over its Unix socket.
#pragma once

#include <string>

#include "common/ipc/keyd_client.h"
#include "fs/core/data_key_source.h"

namespace kmsfs::fs {

// GenerateDataKey and Decrypt through ipc::KeydClient, on behalf of the Requester (OnBehalfOf
// {uid, gid, pid, path}; omitted when who.pid == 0, i.e. for the filesystem itself). keyd's
// error names arrive already mapped to Codes by the ipc error table (docs/errors.md):
// AccessDeniedException -> kPermissionDenied, DisabledException / KMSInvalidStateException ->
// kKeyUnavailable, InvalidCiphertextException -> kCorrupt, keyd unreachable or timed out ->
// kUnavailable. A successful answer whose key is not 32 bytes is kInternal. Never logs; key
// bytes stay in SecretBytes.
//
// Thread-safe (KeydClient is). `client` is borrowed and must outlive this object; it should be
// created with KeydClientOptions::expected_server_uid set, since it receives plaintext DEKs.
class KeydDataKeySource final : public DataKeySource {
 public:
  explicit KeydDataKeySource(ipc::KeydClient* client);

  Result<NewDataKey> GenerateDataKey(const std::string& key_id,
                                     const format::EncryptionContext& ctx,
                                     const Requester& who) override;
  Result<crypto::SecretBytes> Decrypt(ByteSpan wrapped, const format::EncryptionContext& ctx,
                                      const Requester& who) override;

 private:
  ipc::KeydClient* const client_;
};

}  // namespace kmsfs::fs
