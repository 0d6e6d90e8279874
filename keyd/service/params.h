// ParamReader: strict, typed access to one request's Params object (AWS KMS field names).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/status.h"
#include "common/crypto/secret.h"
#include "common/format/encryption_context.h"
#include "keyd/store/records.h"

namespace kmsfs::keyd {

// Every error is a ValidationException (ipc::NamedError) whose message names the field and the
// allowed range or type — and never quotes the value, which may be a secret (Plaintext).
// Why strict: an unknown field is rejected instead of ignored, so a client relying on a field
// this keyd does not implement (DryRun, GrantTokens, ...) learns it at once.
// The reader borrows `params`, which must outlive it. Thread-compatible.
class ParamReader {
 public:
  // Fails if `params` is not an object or holds a field not in `allowed`.
  static Result<ParamReader> Open(const nlohmann::json& params,
                                  std::initializer_list<std::string_view> allowed);

  bool Has(std::string_view name) const;
  // A string of min_len..max_len bytes; nullopt when absent (or JSON null).
  Result<std::optional<std::string>> OptString(std::string_view name, size_t min_len,
                                               size_t max_len) const;
  Result<std::string> String(std::string_view name, size_t min_len, size_t max_len) const;
  // An integer (no fraction, no exponent form that is not integral) within [lo, hi].
  Result<std::optional<int64_t>> OptInt(std::string_view name, int64_t lo, int64_t hi) const;
  Result<std::optional<bool>> OptBool(std::string_view name) const;
  // An object of string values within format::CanonicalContext's limits; {} when absent.
  Result<format::EncryptionContext> Context(std::string_view name) const;
  // [{"TagKey": ..., "TagValue": ...}, ...]; ValidateKeyRecord checks the limits later.
  Result<std::vector<KeyTag>> Tags(std::string_view name) const;
  // The raw binary of a base64 field (strict RFC 4648), as Bytes; nullopt when absent. Errors
  // are ValidationException unless `bad_base64_name` names another exception (a CiphertextBlob
  // that is not base64 is an InvalidCiphertextException, like one that does not parse).
  Result<std::optional<Bytes>> OptBase64(std::string_view name, size_t min_len, size_t max_len,
                                         std::string_view bad_base64_name) const;
  // As OptBase64 (ValidationException), decoded straight into locked memory; the intermediate
  // buffer is wiped. For Plaintext.
  Result<std::optional<crypto::SecretBytes>> OptSecretBase64(std::string_view name, size_t min_len,
                                                             size_t max_len) const;

 private:
  explicit ParamReader(const nlohmann::json& params) : params_(&params) {}
  const nlohmann::json* Find(std::string_view name) const;
  const nlohmann::json* params_;
};

// ipc::NamedError("ValidationException", message).
Error ValidationError(const std::string& message);

}  // namespace kmsfs::keyd
