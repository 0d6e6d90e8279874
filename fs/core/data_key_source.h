// DataKeySource: where the filesystem gets and unwraps data keys (keyd in production, a fake in tests).
#pragma once

#include <sys/types.h>

#include <string>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"
#include "common/format/encryption_context.h"

namespace kmsfs::fs {

// The process on whose behalf a key is requested (from fuse_req_ctx), and the file's path inside
// the volume ("/dir/file", canonical as ipc::IsCanonicalVolumePath; "" when the key is not about
// one file): keyd's policy decides on these and its audit trail records them. pid 0 means the
// filesystem process itself (mount, `kmsfs init`): no one is acted for, keyd sees the peer.
struct Requester {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::string path;
};

struct NewDataKey {
  crypto::SecretBytes plaintext;  // 32 bytes
  Bytes wrapped;                  // serialized WrappedBlob
};

// Thread-safe. Errors: kPermissionDenied (policy), kKeyUnavailable (key disabled/pending
// deletion/destroyed), kUnavailable (keyd unreachable or timed out — after a bounded wait),
// kCorrupt (blob does not authenticate), others as keyd reports them.
class DataKeySource {
 public:
  virtual ~DataKeySource() = default;
  virtual Result<NewDataKey> GenerateDataKey(const std::string& key_id,
                                             const format::EncryptionContext& ctx,
                                             const Requester& who) = 0;
  virtual Result<crypto::SecretBytes> Decrypt(ByteSpan wrapped,
                                              const format::EncryptionContext& ctx,
                                              const Requester& who) = 0;
};

}  // namespace kmsfs::fs
