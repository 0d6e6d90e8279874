// KeydWrapService: the WrapService of rewrap over one KeydClient connection to kmsfs-keyd.
#pragma once

#include <memory>
#include <string>

#include "common/ipc/keyd_client.h"
#include "fs/lifecycle/rewrap.h"

namespace kmsfs::fs::lifecycle {

// Owns its own KeydClient (one connection): KeydClient serializes calls, so parallel rewrap
// workers each need one. Thread-compatible (one worker).
class KeydWrapService final : public WrapService {
 public:
  KeydWrapService(std::string socket_path, ipc::KeydClientOptions options)
      : client_(std::make_unique<ipc::KeydClient>(std::move(socket_path), options)) {}
  // ReEncrypt with DestinationKeyId = `key_id` (the blob's own key: rewrap moves to that key's
  // current version, never to another key). kInternal if keyd's answer lacks KeyVersion.
  Result<Rewrapped> ReEncrypt(ByteSpan blob, const format::EncryptionContext& context,
                              const std::string& key_id) override;

 private:
  std::unique_ptr<ipc::KeydClient> client_;
};

}  // namespace kmsfs::fs::lifecycle
