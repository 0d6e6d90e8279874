// KeydClient: the thread-safe client of kmsfs-keyd that the filesystem and kmsctl use.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/base/unique_fd.h"
#include "common/crypto/secret.h"
#include "common/ipc/deadline.h"
#include "common/ipc/message.h"
#include "common/ipc/operation.h"

namespace kmsfs::ipc {

struct KeydClientOptions {
  // Budget for connect(); also capped by the call's own deadline.
  std::chrono::milliseconds connect_timeout{2000};
  // Budget for a whole call: waiting for the connection lock, (re)connecting, sending, receiving.
  std::chrono::milliseconds call_timeout{10000};
  // If set, a server whose SO_PEERCRED uid differs is refused (kUnavailable). The filesystem
  // should set it (to 0, or keyd's user): it receives plaintext DEKs over this socket, and an
  // impostor at the socket path could otherwise hand it keys the impostor knows.
  std::optional<uid_t> expected_server_uid;
};

// Same type as format::EncryptionContext (ordered map; ordering is irrelevant in JSON).
using EncryptionContext = std::map<std::string, std::string>;

struct DataKey {
  crypto::SecretBytes plaintext;  // 32 bytes (KeySpec AES_256)
  Bytes ciphertext_blob;
  std::string key_id;
};
struct DecryptedData {
  crypto::SecretBytes plaintext;
  std::string key_id;
};
struct EncryptedData {
  Bytes ciphertext_blob;
  std::string key_id;
};
struct ReEncryptedData {
  Bytes ciphertext_blob;
  std::string source_key_id;
  std::string key_id;  // the destination key
};

// One connection to keyd, opened lazily and shared by all threads: calls are serialized by a
// mutex and a call's deadline includes its wait for that mutex, so no call takes longer than
// call_timeout however many threads queue up (a slow keyd makes calls fail, never hang).
//
// Reconnects: a connection found broken *before* the request was fully written (keyd restarted,
// idle close, EPIPE) is replaced and the request sent once more on a new connection. Once a whole
// request has been written, a failure to read the answer is returned as kUnavailable and the call
// is NOT retried: keyd may have executed it (a CreateKey or a ScheduleKeyDeletion must not run
// twice); the next call reconnects.
//
// Errors: keyd's error responses become Error(code of the name, "Name: message") — see
// ErrorNameOf(); transport failures (unreachable, timeout, connection lost, malformed or
// mismatched response) are kUnavailable (kPermissionDenied for EACCES on the socket); bad
// arguments are kInvalidArgument; a well-formed response missing an expected field is kInternal.
//
// Secrets: plaintext arrives as base64 inside JSON; the typed helpers decode it straight into
// SecretBytes and wipe the JSON string, the received frame and the sent request with
// crypto::Wipe. This is best effort: nlohmann's parser and dump() grow internal buffers whose
// freed copies we cannot reach, and the kernel's socket buffers are outside our control.
class KeydClient {
 public:
  // `socket_path` as from ResolveSocketPath(). Does not connect. The client must outlive every
  // call in progress on any thread.
  explicit KeydClient(std::string socket_path, KeydClientOptions options = {});
  ~KeydClient();
  KeydClient(const KeydClient&) = delete;
  KeydClient& operator=(const KeydClient&) = delete;

  // One request/response. A keyd error response is a *successful* Exchange (response.ok() false):
  // for kmsctl --output json, which prints keyd's error object as is. Every string in `params` is
  // wiped afterwards (it may carry a Plaintext). Thread-safe.
  Result<Response> Exchange(Op op, nlohmann::json params, const OnBehalfOf* on_behalf_of = nullptr);
  // As Exchange, but a keyd error becomes the returned Error; on success the Result object.
  Result<nlohmann::json> Call(Op op, nlohmann::json params,
                              const OnBehalfOf* on_behalf_of = nullptr);

  // Typed envelope operations (AWS KMS fields; docs/protocol.md). Thread-safe.
  // A new 256-bit data key under `key_id` (an id, ARN-less, or "alias/name").
  Result<DataKey> GenerateDataKey(std::string_view key_id, const EncryptionContext& context,
                                  const OnBehalfOf* on_behalf_of = nullptr);
  Result<DecryptedData> Decrypt(ByteSpan ciphertext_blob, const EncryptionContext& context,
                                const OnBehalfOf* on_behalf_of = nullptr);
  Result<EncryptedData> Encrypt(std::string_view key_id, ByteSpan plaintext,
                                const EncryptionContext& context,
                                const OnBehalfOf* on_behalf_of = nullptr);
  Result<ReEncryptedData> ReEncrypt(ByteSpan ciphertext_blob,
                                    const EncryptionContext& source_context,
                                    std::string_view destination_key_id,
                                    const EncryptionContext& destination_context,
                                    const OnBehalfOf* on_behalf_of = nullptr);

  // Closes the connection now (the next call reconnects). Waits for a running call. Thread-safe.
  void Disconnect();
  const std::string& socket_path() const { return socket_path_; }

 private:
  // REQUIRES: mu_ held.
  Result<UniqueFd> ConnectLocked(Deadline deadline);
  Error TransportError(std::string_view what, const Error& cause) const;

  const std::string socket_path_;
  const KeydClientOptions options_;
  // Lock order: mu_ is a leaf (nothing else is locked while it is held).
  std::timed_mutex mu_;
  UniqueFd conn_;          // guarded by mu_; invalid when not connected
  uint64_t next_id_ = 1;   // guarded by mu_; 0 is reserved for "request could not be read"
};

}  // namespace kmsfs::ipc
