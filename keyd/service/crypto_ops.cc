// KmsService: the data plane — GenerateDataKey*, Encrypt, Decrypt, ReEncrypt.
//
// Shape of every operation: read and validate all parameters, resolve and authorize the key(s)
// (policy with the request's EncryptionContext, kmsfs:Path and kmsfs:Volume), check key state,
// read the material in one snapshot (re-deciding if the key record changed meanwhile), then do
// the crypto. Plaintext only ever sits in crypto::SecretBytes; Handle encodes it after the audit.
#include <optional>
#include <utility>

#include "common/crypto/random.h"
#include "common/crypto/wrap.h"
#include "common/format/base64.h"
#include "common/format/wrapped_blob.h"
#include "common/ipc/errors.h"
#include "common/log/log.h"
#include "keyd/service/params.h"
#include "keyd/service/service_impl.h"

namespace kmsfs::keyd {
namespace {

using nlohmann::json;

constexpr size_t kMaxKeyRefLen = 2048;
constexpr size_t kMaxPlaintext = 4096;  // AWS KMS Encrypt limit; also WrappedBlob's
constexpr char kAlgorithm[] = "SYMMETRIC_DEFAULT";

// Never says which of these it was: telling "wrong context" from "tampered" would help an
// attacker probe contexts.
Error BadCiphertext() {
  return ipc::NamedError(
      "InvalidCiphertextException",
      "the ciphertext cannot be decrypted: it was modified, was not produced by this keyd, or "
      "the EncryptionContext differs from the one it was encrypted with; pass exactly the "
      "EncryptionContext used to encrypt it");
}

Status CheckAlgorithm(const ParamReader& params, std::string_view name) {
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> alg, params.OptString(name, 1, 64));
  if (alg && *alg != kAlgorithm) {
    return ValidationError(std::string(name) + " must be SYMMETRIC_DEFAULT (AES-256-GCM)");
  }
  return Status::Ok();
}

// The blob's bytes and the (key id, version) it names. InvalidCiphertextException if absent
// from the blob's structure; ValidationException only when the field is missing.
struct ParsedBlob {
  Bytes bytes;
  std::string key_id;
  uint32_t version = 0;
};
Result<ParsedBlob> ReadBlob(const ParamReader& params) {
  KMSFS_ASSIGN_OR_RETURN(std::optional<Bytes> bytes,
                         params.OptBase64("CiphertextBlob", 1, format::WrappedBlob::kMaxLen,
                                          "InvalidCiphertextException"));
  if (!bytes) return ValidationError("CiphertextBlob is required");
  auto peek = format::PeekWrappedBlobKey(*bytes);
  if (!peek.ok()) return BadCiphertext();
  return ParsedBlob{std::move(*bytes), std::move(peek->first), peek->second};
}

Error Internal(std::string_view what, const Error& e) {
  log::Get("keyd.service")->error("{}: {}", what, e.ToString());
  return ipc::NamedError("KMSInternalException",
                         std::string(what) +
                             " failed inside keyd (logged); retry, and report it "
                             "if it persists");
}

}  // namespace

Result<KeyMaterial> KmsService::Impl::MaterialFor(const std::string& key_id,
                                                  std::optional<uint32_t> version) {
  auto m = store_->GetKeyMaterial(key_id, version);
  if (m.ok()) return m;
  const Error& e = m.error();
  switch (e.code()) {
    case Code::kNotFound:
      if (version) return BadCiphertext();  // a blob naming a version that never existed
      return e;
    case Code::kKeyUnavailable:  // a Retired or Destroyed version (docs/lifecycle.md)
      return ipc::NamedError("KeyUnavailableException",
                             e.message() +
                                 ": that key version no longer serves requests, so "
                                 "what it encrypted cannot be decrypted");
    case Code::kCorrupt:
      log::Get("keyd.service")
          ->error("key {}: stored material does not unseal: {}", key_id, e.ToString());
      return ipc::NamedError("KMSInternalException",
                             "the stored material of key " + key_id +
                                 " failed its integrity check (logged); restore keyd's state "
                                 "from a backup");
    default:
      return e;
  }
}

OpResult KmsService::Impl::GenerateDataKey(const json& p, const CallerContext& c, AuditEvent& ev) {
  return GenerateDataKeyCommon(p, c, ev, /*with_plaintext=*/true);
}

OpResult KmsService::Impl::GenerateDataKeyWithoutPlaintext(const json& p, const CallerContext& c,
                                                           AuditEvent& ev) {
  return GenerateDataKeyCommon(p, c, ev, /*with_plaintext=*/false);
}

OpResult KmsService::Impl::GenerateDataKeyCommon(const json& p, const CallerContext& caller,
                                                 AuditEvent& ev, bool with_plaintext) {
  KMSFS_ASSIGN_OR_RETURN(
      ParamReader params,
      ParamReader::Open(p, {"KeyId", "KeySpec", "NumberOfBytes", "EncryptionContext"}));
  KMSFS_ASSIGN_OR_RETURN(std::string ref, params.String("KeyId", 1, kMaxKeyRefLen));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> spec, params.OptString("KeySpec", 1, 32));
  KMSFS_ASSIGN_OR_RETURN(std::optional<int64_t> number, params.OptInt("NumberOfBytes", 1, 1024));
  if (spec && number) return ValidationError("give either KeySpec or NumberOfBytes, not both");
  if (!spec && !number) {
    return ValidationError("KeySpec (AES_256 or AES_128) or NumberOfBytes (1 to 1024) is required");
  }
  size_t size = number ? static_cast<size_t>(*number) : 0;
  if (spec) {
    if (*spec == "AES_256") {
      size = 32;
    } else if (*spec == "AES_128") {
      size = 16;
    } else {
      return ValidationError("KeySpec must be AES_256 or AES_128");
    }
  }
  KMSFS_ASSIGN_OR_RETURN(format::EncryptionContext ctx, params.Context("EncryptionContext"));
  ev.record.encryption_context = ctx;

  const Action action =
      with_plaintext ? Action::kGenerateDataKey : Action::kGenerateDataKeyWithoutPlaintext;
  // As in Decrypt: a key id or alias that names a servable key is handled in one snapshot (the
  // key record read once); an ARN, or anything that fails, takes the long way, which reports
  // problems in the documented order (authorization before key state).
  std::optional<KeyMaterial> material;
  if (ref.rfind("arn:", 0) != 0) {
    auto snapshot = store_->GetKeyMaterial(ref, std::nullopt);
    if (snapshot.ok()) {
      ev.record.key_id = snapshot->key.key_id;
      KMSFS_RETURN_IF_ERROR(Authorize(snapshot->key, action, caller, &ctx, ev.record));
      KMSFS_RETURN_IF_ERROR(RequireUsable(snapshot->key));
      material.emplace(std::move(*snapshot));
    }
  }
  if (!material) {
    KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadKey(ref, "KeyId", ev.record));
    KMSFS_RETURN_IF_ERROR(Authorize(key, action, caller, &ctx, ev.record));
    KMSFS_RETURN_IF_ERROR(RequireUsable(key));
    KMSFS_ASSIGN_OR_RETURN(KeyMaterial km, MaterialFor(key.key_id, std::nullopt));
    if (!(km.key == key)) {  // changed between the two snapshots: decide on the newer one
      KMSFS_RETURN_IF_ERROR(Reauthorize(km.key, key, action, caller, &ctx, ev.record));
      KMSFS_RETURN_IF_ERROR(RequireUsable(km.key));
    }
    material.emplace(std::move(km));
  }
  const KeyMaterial& km = *material;
  ev.record.key_version = km.version;
  ev.record.detail = std::to_string(size) + "-byte data key";

  crypto::SecretBytes dek = crypto::RandomSecret(size);
  auto blob = crypto::WrapKey(km.material, km.key.key_id, km.version, ctx, dek.span());
  if (!blob.ok()) return Internal("wrapping the data key", blob.error());
  OpOutput out;
  out.result["KeyId"] = km.key.key_id;
  out.result["CiphertextBlob"] = format::Base64Encode(*blob);
  if (with_plaintext) out.plaintext = std::move(dek);
  return out;
}

OpResult KmsService::Impl::Encrypt(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(
      ParamReader params,
      ParamReader::Open(p, {"KeyId", "Plaintext", "EncryptionContext", "EncryptionAlgorithm"}));
  KMSFS_ASSIGN_OR_RETURN(std::string ref, params.String("KeyId", 1, kMaxKeyRefLen));
  KMSFS_RETURN_IF_ERROR(CheckAlgorithm(params, "EncryptionAlgorithm"));
  KMSFS_ASSIGN_OR_RETURN(format::EncryptionContext ctx, params.Context("EncryptionContext"));
  ev.record.encryption_context = ctx;
  KMSFS_ASSIGN_OR_RETURN(std::optional<crypto::SecretBytes> plaintext,
                         params.OptSecretBase64("Plaintext", 1, kMaxPlaintext));
  if (!plaintext) return ValidationError("Plaintext is required (base64 of 1 to 4096 bytes)");

  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, LoadKey(ref, "KeyId", ev.record));
  KMSFS_RETURN_IF_ERROR(Authorize(key, Action::kEncrypt, caller, &ctx, ev.record));
  KMSFS_RETURN_IF_ERROR(RequireUsable(key));
  KMSFS_ASSIGN_OR_RETURN(KeyMaterial km, MaterialFor(key.key_id, std::nullopt));
  if (!(km.key == key)) {
    KMSFS_RETURN_IF_ERROR(Reauthorize(km.key, key, Action::kEncrypt, caller, &ctx, ev.record));
    KMSFS_RETURN_IF_ERROR(RequireUsable(km.key));
  }
  ev.record.key_version = km.version;
  ev.record.detail = std::to_string(plaintext->size()) + "-byte plaintext";

  auto blob = crypto::WrapKey(km.material, km.key.key_id, km.version, ctx, plaintext->span());
  if (!blob.ok()) return Internal("encrypting", blob.error());
  OpOutput out;
  out.result["KeyId"] = km.key.key_id;
  out.result["CiphertextBlob"] = format::Base64Encode(*blob);
  out.result["EncryptionAlgorithm"] = kAlgorithm;
  return out;
}

OpResult KmsService::Impl::Decrypt(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(ParamReader params,
                         ParamReader::Open(p, {"CiphertextBlob", "EncryptionContext", "KeyId",
                                               "EncryptionAlgorithm"}));
  KMSFS_RETURN_IF_ERROR(CheckAlgorithm(params, "EncryptionAlgorithm"));
  KMSFS_ASSIGN_OR_RETURN(format::EncryptionContext ctx, params.Context("EncryptionContext"));
  ev.record.encryption_context = ctx;
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> ref,
                         params.OptString("KeyId", 1, kMaxKeyRefLen));
  KMSFS_ASSIGN_OR_RETURN(ParsedBlob blob, ReadBlob(params));
  ev.record.key_id = blob.key_id;
  ev.record.key_version = blob.version;

  if (ref) {
    // The caller insists on a key (AWS's best practice): refuse a blob made under any other.
    AuditRecord scratch;
    KMSFS_ASSIGN_OR_RETURN(KeyRecord named, LoadKey(*ref, "KeyId", scratch));
    if (named.key_id != blob.key_id) {
      return ipc::NamedError("IncorrectKeyException",
                             "the ciphertext was encrypted under another key than KeyId names; "
                             "omit KeyId or name the key that encrypted it");
    }
  }
  // The usual case in one store snapshot: the key record that comes with the material is the
  // one to authorize on. (Reading the record first and the material second, as below, decoded
  // the key record twice per Decrypt — ~4 % of keyd's CPU in the Decrypt profile.) The material
  // stays in locked memory and is used only after the policy allowed it.
  auto snapshot = store_->GetKeyMaterial(blob.key_id, blob.version);
  std::optional<KeyMaterial> material;
  if (snapshot.ok()) {
    KMSFS_RETURN_IF_ERROR(Authorize(snapshot->key, Action::kDecrypt, caller, &ctx, ev.record));
    KMSFS_RETURN_IF_ERROR(RequireUsable(snapshot->key));
    material.emplace(std::move(*snapshot));
  } else {
    // No such key, a version that does not serve, damage: the long way reports it in the
    // documented order — authorization before key and version state, so a caller the policy
    // does not allow learns nothing about the key's versions.
    auto found = store_->GetKey(blob.key_id);
    if (!found.ok()) {
      if (found.error().code() == Code::kInvalidArgument) return BadCiphertext();
      if (found.error().code() == Code::kNotFound) {
        return ipc::NamedError("NotFoundException",
                               "the ciphertext names key " + blob.key_id +
                                   ", which does not exist in this keyd; was it made by another "
                                   "keyd, or is its state restored from an older backup?");
      }
      return found.error();
    }
    const KeyRecord& key = *found;
    KMSFS_RETURN_IF_ERROR(Authorize(key, Action::kDecrypt, caller, &ctx, ev.record));
    KMSFS_RETURN_IF_ERROR(RequireUsable(key));
    KMSFS_ASSIGN_OR_RETURN(KeyMaterial km, MaterialFor(key.key_id, blob.version));
    if (!(km.key == key)) {
      KMSFS_RETURN_IF_ERROR(Reauthorize(km.key, key, Action::kDecrypt, caller, &ctx, ev.record));
      KMSFS_RETURN_IF_ERROR(RequireUsable(km.key));
    }
    material.emplace(std::move(km));
  }
  const KeyMaterial& km = *material;

  auto plaintext = crypto::UnwrapKey(km.material, blob.bytes, ctx);
  if (!plaintext.ok()) {
    if (plaintext.error().code() == Code::kCorrupt) return BadCiphertext();
    if (plaintext.error().code() == Code::kInvalidArgument) {
      return ValidationError("EncryptionContext is not acceptable: " + plaintext.error().message());
    }
    return Internal("decrypting", plaintext.error());
  }
  OpOutput out;
  out.result["KeyId"] = km.key.key_id;
  out.result["EncryptionAlgorithm"] = kAlgorithm;
  out.plaintext = std::move(*plaintext);
  return out;
}

OpResult KmsService::Impl::ReEncrypt(const json& p, const CallerContext& caller, AuditEvent& ev) {
  KMSFS_ASSIGN_OR_RETURN(
      ParamReader params,
      ParamReader::Open(p, {"CiphertextBlob", "SourceEncryptionContext", "SourceKeyId",
                            "DestinationKeyId", "DestinationEncryptionContext",
                            "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm"}));
  KMSFS_RETURN_IF_ERROR(CheckAlgorithm(params, "SourceEncryptionAlgorithm"));
  KMSFS_RETURN_IF_ERROR(CheckAlgorithm(params, "DestinationEncryptionAlgorithm"));
  KMSFS_ASSIGN_OR_RETURN(format::EncryptionContext src_ctx,
                         params.Context("SourceEncryptionContext"));
  KMSFS_ASSIGN_OR_RETURN(format::EncryptionContext dst_ctx,
                         params.Context("DestinationEncryptionContext"));
  KMSFS_ASSIGN_OR_RETURN(std::optional<std::string> src_ref,
                         params.OptString("SourceKeyId", 1, kMaxKeyRefLen));
  KMSFS_ASSIGN_OR_RETURN(std::string dst_ref, params.String("DestinationKeyId", 1, kMaxKeyRefLen));
  // Two keys are used, so two audit records: one under each key id, both durable before reply.
  AuditRecord dst_record = ev.record;
  dst_record.encryption_context = dst_ctx;
  ev.record.encryption_context = src_ctx;
  KMSFS_ASSIGN_OR_RETURN(ParsedBlob blob, ReadBlob(params));
  ev.record.key_id = blob.key_id;
  ev.record.key_version = blob.version;

  // Source: as Decrypt, with kms:ReEncryptFrom.
  if (src_ref) {
    AuditRecord scratch;
    KMSFS_ASSIGN_OR_RETURN(KeyRecord named, LoadKey(*src_ref, "SourceKeyId", scratch));
    if (named.key_id != blob.key_id) {
      return ipc::NamedError("IncorrectKeyException",
                             "the ciphertext was encrypted under another key than SourceKeyId "
                             "names; omit SourceKeyId or name the key that encrypted it");
    }
  }
  auto found = store_->GetKey(blob.key_id);
  if (!found.ok()) {
    if (found.error().code() == Code::kInvalidArgument) return BadCiphertext();
    if (found.error().code() == Code::kNotFound) {
      return ipc::NamedError("NotFoundException", "the ciphertext names key " + blob.key_id +
                                                      ", which does not exist in this keyd");
    }
    return found.error();
  }
  const KeyRecord src = *found;
  KMSFS_RETURN_IF_ERROR(Authorize(src, Action::kReEncryptFrom, caller, &src_ctx, ev.record));
  KMSFS_RETURN_IF_ERROR(RequireUsable(src));

  // Destination, with kms:ReEncryptTo.
  ev.secondary = std::move(dst_record);
  AuditRecord& dst_rec = *ev.secondary;
  KMSFS_ASSIGN_OR_RETURN(KeyRecord dst, LoadKey(dst_ref, "DestinationKeyId", dst_rec));
  KMSFS_RETURN_IF_ERROR(Authorize(dst, Action::kReEncryptTo, caller, &dst_ctx, dst_rec));
  KMSFS_RETURN_IF_ERROR(RequireUsable(dst));

  KMSFS_ASSIGN_OR_RETURN(KeyMaterial src_km, MaterialFor(src.key_id, blob.version));
  if (!(src_km.key == src)) {
    KMSFS_RETURN_IF_ERROR(
        Reauthorize(src_km.key, src, Action::kReEncryptFrom, caller, &src_ctx, ev.record));
    KMSFS_RETURN_IF_ERROR(RequireUsable(src_km.key));
  }
  auto plaintext = crypto::UnwrapKey(src_km.material, blob.bytes, src_ctx);
  if (!plaintext.ok()) {
    if (plaintext.error().code() == Code::kCorrupt) return BadCiphertext();
    return Internal("decrypting", plaintext.error());
  }
  // The plaintext never leaves keyd: it goes from one locked buffer straight into the new wrap.
  KMSFS_ASSIGN_OR_RETURN(KeyMaterial dst_km, MaterialFor(dst.key_id, std::nullopt));
  if (!(dst_km.key == dst)) {
    KMSFS_RETURN_IF_ERROR(
        Reauthorize(dst_km.key, dst, Action::kReEncryptTo, caller, &dst_ctx, dst_rec));
    KMSFS_RETURN_IF_ERROR(RequireUsable(dst_km.key));
  }
  auto wrapped = crypto::WrapKey(dst_km.material, dst_km.key.key_id, dst_km.version, dst_ctx,
                                 plaintext->span());
  if (!wrapped.ok()) return Internal("re-encrypting", wrapped.error());

  dst_rec.key_version = dst_km.version;
  ev.record.detail =
      "re-encrypted to key " + dst_km.key.key_id + " version " + std::to_string(dst_km.version);
  dst_rec.detail =
      "re-encrypted from key " + src.key_id + " version " + std::to_string(blob.version);
  OpOutput out;
  out.result["CiphertextBlob"] = format::Base64Encode(*wrapped);
  out.result["SourceKeyId"] = src.key_id;
  out.result["KeyId"] = dst_km.key.key_id;
  out.result["SourceEncryptionAlgorithm"] = kAlgorithm;
  out.result["DestinationEncryptionAlgorithm"] = kAlgorithm;
  // kmsfs extensions: which versions were involved (kmsfs rewrap reports them).
  out.result["SourceKeyVersion"] = blob.version;
  out.result["KeyVersion"] = dst_km.version;
  return out;
}

}  // namespace kmsfs::keyd
