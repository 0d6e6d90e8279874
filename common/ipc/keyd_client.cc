#include "common/ipc/keyd_client.h"

#include <poll.h>

#include <cerrno>
#include <utility>

#include "common/base/scope_exit.h"
#include "common/format/base64.h"
#include "common/ipc/frame.h"
#include "common/ipc/peer_cred.h"
#include "common/ipc/unix_socket.h"

namespace kmsfs::ipc {
namespace {

using nlohmann::json;

constexpr size_t kDataKeyLen = 32;          // KeySpec AES_256
constexpr size_t kMaxPlaintextLen = 4096;   // AWS KMS limit for Encrypt/Decrypt plaintext

// An idle connection should have nothing to read. EOF (keyd closed it: restart, idle timeout) or
// unsolicited bytes both mean it must not carry the next request. Checking *before* writing is
// what lets a keyd restart go unnoticed instead of costing one failed call.
bool IdleConnectionUsable(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  int r;
  do {
    r = ::poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  return r == 0;
}

Error Malformed(Op op, std::string_view what) {
  return Error(Code::kInternal, "malformed " + std::string(OpName(op)) + " response from the key " +
                                    "service: " + std::string(what));
}

Result<std::string> GetString(const json& result, const char* field, Op op) {
  const auto it = result.find(field);
  if (it == result.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
    return Malformed(op, std::string(field) + " is missing or not a non-empty string");
  }
  return it->get_ref<const std::string&>();
}

Result<Bytes> GetBlob(const json& result, const char* field, Op op) {
  KMSFS_ASSIGN_OR_RETURN(std::string text, GetString(result, field, op));
  auto bytes = format::Base64Decode(text);
  if (!bytes.ok()) return Malformed(op, std::string(field) + " is not valid base64");
  if (bytes->empty()) return Malformed(op, std::string(field) + " is empty");
  return std::move(bytes).value();
}

// Decodes result[field] into locked memory and wipes the JSON string (and the decode buffer)
// whatever happens. `exact_len` 0 means any length in 1..kMaxPlaintextLen.
Result<crypto::SecretBytes> TakeSecret(json& result, const char* field, Op op, size_t exact_len) {
  const auto it = result.find(field);
  if (it == result.end() || !it->is_string()) {
    return Malformed(op, std::string(field) + " is missing or not a string");
  }
  std::string& text = it->get_ref<std::string&>();
  ScopeExit wipe_text([&text] { crypto::Wipe(text); });
  // Length first: no decoding of an absurd string into an unlocked buffer.
  const bool length_ok = exact_len != 0
                             ? text.size() == format::Base64EncodedLen(exact_len)
                             : !text.empty() && text.size() <= format::Base64EncodedLen(kMaxPlaintextLen);
  if (!length_ok) return Malformed(op, std::string(field) + " has the wrong length");
  auto bytes = format::Base64Decode(text);
  if (!bytes.ok()) return Malformed(op, std::string(field) + " is not valid base64");
  ScopeExit wipe_bytes([&bytes] { crypto::Wipe(std::span<uint8_t>(*bytes)); });
  if (bytes->empty() || (exact_len != 0 && bytes->size() != exact_len)) {
    return Malformed(op, std::string(field) + " has the wrong length");
  }
  return crypto::SecretBytes::CopyFrom(*bytes);
}

json ContextJson(const EncryptionContext& context) { return json(context); }

}  // namespace

KeydClient::KeydClient(std::string socket_path, KeydClientOptions options)
    : socket_path_(std::move(socket_path)), options_(options) {}

KeydClient::~KeydClient() = default;

void KeydClient::Disconnect() {
  std::lock_guard lock(mu_);
  conn_.Reset();
}

Result<UniqueFd> KeydClient::ConnectLocked(Deadline deadline) {
  const Deadline connect_deadline = deadline.Min(Deadline::After(options_.connect_timeout));
  KMSFS_ASSIGN_OR_RETURN(UniqueFd fd, UnixConnect(socket_path_, connect_deadline));
  if (options_.expected_server_uid) {
    KMSFS_ASSIGN_OR_RETURN(PeerCred cred, GetPeerCred(fd.get()));
    if (cred.uid != *options_.expected_server_uid) {
      return Error(Code::kUnavailable,
                   "refusing the key service at " + socket_path_ + ": it runs as uid " +
                       std::to_string(cred.uid) + ", expected uid " +
                       std::to_string(*options_.expected_server_uid));
    }
  }
  return fd;
}

Error KeydClient::TransportError(std::string_view what, const Error& cause) const {
  // Everything that breaks the exchange is kUnavailable for the caller (the fs answers EHOSTDOWN,
  // kmsctl exits 7) whatever the local errno was; the errno is kept for the log.
  return Error(Code::kUnavailable,
               "key service at " + socket_path_ + ": " + std::string(what) + cause.message(),
               cause.sys_errno());
}

Result<Response> KeydClient::Exchange(Op op, json params, const OnBehalfOf* on_behalf_of) {
  const Deadline deadline = Deadline::After(options_.call_timeout);
  Request request;
  request.op = op;
  request.params = std::move(params);
  if (on_behalf_of != nullptr) request.on_behalf_of = *on_behalf_of;
  ScopeExit wipe_params([&request] { WipeJsonStrings(request.params); });

  std::unique_lock lock(mu_, std::defer_lock);
  if (!lock.try_lock_until(deadline.when())) {
    return Error(Code::kUnavailable,
                 "key service at " + socket_path_ +
                     ": timed out waiting for other calls to finish (keyd is slow or hung)",
                 ETIMEDOUT);
  }
  request.request_id = next_id_++;
  KMSFS_ASSIGN_OR_RETURN(std::string frame, SerializeRequest(request));
  ScopeExit wipe_frame([&frame] { crypto::Wipe(frame); });
  if (frame.size() > kMaxFrame) {
    return Error(Code::kInvalidArgument, "request of " + std::to_string(frame.size()) +
                                             " bytes exceeds the frame limit of " +
                                             std::to_string(kMaxFrame));
  }

  for (int attempt = 0;; ++attempt) {
    if (conn_.valid() && !IdleConnectionUsable(conn_.get())) conn_.Reset();
    if (!conn_.valid()) {
      KMSFS_ASSIGN_OR_RETURN(conn_, ConnectLocked(deadline));
    }
    Status written = WriteFrame(conn_.get(), frame, deadline);
    if (!written.ok()) {
      conn_.Reset();
      // keyd never saw the whole frame, so it cannot have executed it: one more try on a fresh
      // connection is safe — unless the deadline is what stopped us.
      if (attempt == 0 && written.error().code() == Code::kUnavailable &&
          written.error().sys_errno() != ETIMEDOUT) {
        continue;
      }
      return TransportError("sending the request failed: ", written.error());
    }
    auto received = ReadFrame(conn_.get(), deadline);
    if (!received.ok()) {
      conn_.Reset();
      return TransportError("no answer (the request may or may not have been executed): ",
                            received.error());
    }
    std::string& answer = *received;
    ScopeExit wipe_answer([&answer] { crypto::Wipe(answer); });
    auto response = ParseResponse(answer);
    if (!response.ok()) {
      conn_.Reset();
      return TransportError("malformed response: ", response.error());
    }
    if (response->request_id != request.request_id) {
      // RequestId 0 with an Error is keyd saying it could not read our request at all; it closes
      // the connection after that, so do we.
      conn_.Reset();
      if (response->request_id == 0 && !response->ok()) return std::move(response).value();
      return Error(Code::kUnavailable,
                   "key service at " + socket_path_ + ": answer for request " +
                       std::to_string(response->request_id) + " while waiting for request " +
                       std::to_string(request.request_id));
    }
    return std::move(response).value();
  }
}

Result<json> KeydClient::Call(Op op, json params, const OnBehalfOf* on_behalf_of) {
  KMSFS_ASSIGN_OR_RETURN(Response response, Exchange(op, std::move(params), on_behalf_of));
  if (!response.ok()) return FromErrorInfo(*response.error);
  return std::move(response.result);
}

Result<DataKey> KeydClient::GenerateDataKey(std::string_view key_id,
                                            const EncryptionContext& context,
                                            const OnBehalfOf* on_behalf_of) {
  json params = {{"KeyId", key_id}, {"KeySpec", "AES_256"}};
  if (!context.empty()) params["EncryptionContext"] = ContextJson(context);
  KMSFS_ASSIGN_OR_RETURN(json result, Call(Op::kGenerateDataKey, std::move(params), on_behalf_of));
  ScopeExit wipe_result([&result] { WipeJsonStrings(result); });
  DataKey key;
  KMSFS_ASSIGN_OR_RETURN(key.plaintext,
                         TakeSecret(result, "Plaintext", Op::kGenerateDataKey, kDataKeyLen));
  KMSFS_ASSIGN_OR_RETURN(key.ciphertext_blob,
                         GetBlob(result, "CiphertextBlob", Op::kGenerateDataKey));
  KMSFS_ASSIGN_OR_RETURN(key.key_id, GetString(result, "KeyId", Op::kGenerateDataKey));
  return key;
}

Result<DecryptedData> KeydClient::Decrypt(ByteSpan ciphertext_blob,
                                          const EncryptionContext& context,
                                          const OnBehalfOf* on_behalf_of) {
  json params = {{"CiphertextBlob", format::Base64Encode(ciphertext_blob)}};
  if (!context.empty()) params["EncryptionContext"] = ContextJson(context);
  KMSFS_ASSIGN_OR_RETURN(json result, Call(Op::kDecrypt, std::move(params), on_behalf_of));
  ScopeExit wipe_result([&result] { WipeJsonStrings(result); });
  DecryptedData out;
  KMSFS_ASSIGN_OR_RETURN(out.plaintext, TakeSecret(result, "Plaintext", Op::kDecrypt, 0));
  KMSFS_ASSIGN_OR_RETURN(out.key_id, GetString(result, "KeyId", Op::kDecrypt));
  return out;
}

Result<EncryptedData> KeydClient::Encrypt(std::string_view key_id, ByteSpan plaintext,
                                          const EncryptionContext& context,
                                          const OnBehalfOf* on_behalf_of) {
  // The base64 text is moved into the json and wiped by Exchange with the rest of the params.
  json params = {{"KeyId", key_id}, {"Plaintext", format::Base64Encode(plaintext)}};
  if (!context.empty()) params["EncryptionContext"] = ContextJson(context);
  KMSFS_ASSIGN_OR_RETURN(json result, Call(Op::kEncrypt, std::move(params), on_behalf_of));
  EncryptedData out;
  KMSFS_ASSIGN_OR_RETURN(out.ciphertext_blob, GetBlob(result, "CiphertextBlob", Op::kEncrypt));
  KMSFS_ASSIGN_OR_RETURN(out.key_id, GetString(result, "KeyId", Op::kEncrypt));
  return out;
}

Result<ReEncryptedData> KeydClient::ReEncrypt(ByteSpan ciphertext_blob,
                                              const EncryptionContext& source_context,
                                              std::string_view destination_key_id,
                                              const EncryptionContext& destination_context,
                                              const OnBehalfOf* on_behalf_of) {
  json params = {{"CiphertextBlob", format::Base64Encode(ciphertext_blob)},
                 {"DestinationKeyId", destination_key_id}};
  if (!source_context.empty()) params["SourceEncryptionContext"] = ContextJson(source_context);
  if (!destination_context.empty()) {
    params["DestinationEncryptionContext"] = ContextJson(destination_context);
  }
  KMSFS_ASSIGN_OR_RETURN(json result, Call(Op::kReEncrypt, std::move(params), on_behalf_of));
  ReEncryptedData out;
  KMSFS_ASSIGN_OR_RETURN(out.ciphertext_blob, GetBlob(result, "CiphertextBlob", Op::kReEncrypt));
  KMSFS_ASSIGN_OR_RETURN(out.source_key_id, GetString(result, "SourceKeyId", Op::kReEncrypt));
  KMSFS_ASSIGN_OR_RETURN(out.key_id, GetString(result, "KeyId", Op::kReEncrypt));
  return out;
}

}  // namespace kmsfs::ipc
