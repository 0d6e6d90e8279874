// HKDF-SHA256 over OpenSSL 3.0's EVP_KDF "HKDF" (mode EXTRACT_AND_EXPAND, the default).
// The KDF context copies ikm/salt/info and cleanses them when freed (kdf_hkdf_reset uses
// OPENSSL_clear_free); the output is written straight into SecretBytes.
#include "common/crypto/hkdf.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <memory>

#include "common/crypto/ossl_util.h"

namespace kmsfs::crypto {
namespace {

using internal::FreeWith;
using internal::OpenSslError;
using KdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, FreeWith<&EVP_KDF_CTX_free>>;

EVP_KDF* HkdfAlgorithm() {
  // Fetched once; held for the process lifetime.
  static EVP_KDF* const kHkdf = EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr);
  return kHkdf;
}

// OSSL_PARAM takes void* but only reads octet-string inputs.
OSSL_PARAM OctetParam(const char* name, ByteSpan b) {
  return OSSL_PARAM_construct_octet_string(name, const_cast<uint8_t*>(b.data()), b.size());
}

}  // namespace

Result<SecretBytes> Hkdf(ByteSpan ikm, ByteSpan salt, ByteSpan info, size_t out_len) {
  if (ikm.empty()) return Error(Code::kInvalidArgument, "HKDF input key material is empty");
  if (out_len == 0 || out_len > kHkdfMaxOutputLen) {
    return Error(Code::kInvalidArgument, "HKDF output length out of range");
  }
  if (info.size() > kHkdfMaxInfoLen) return Error(Code::kInvalidArgument, "HKDF info too long");

  EVP_KDF* kdf = HkdfAlgorithm();
  if (kdf == nullptr) return OpenSslError("EVP_KDF_fetch(HKDF)");
  KdfCtxPtr ctx(EVP_KDF_CTX_new(kdf));
  if (!ctx) return OpenSslError("EVP_KDF_CTX_new(HKDF)");

  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  size_t n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OctetParam(OSSL_KDF_PARAM_KEY, ikm);
  // Absent salt and empty salt are the same thing in RFC 5869; OpenSSL agrees, but say it plainly.
  if (!salt.empty()) params[n++] = OctetParam(OSSL_KDF_PARAM_SALT, salt);
  if (!info.empty()) params[n++] = OctetParam(OSSL_KDF_PARAM_INFO, info);
  params[n] = OSSL_PARAM_construct_end();

  SecretBytes okm(out_len);
  if (EVP_KDF_derive(ctx.get(), okm.data(), okm.size(), params) != 1) {
    return OpenSslError("EVP_KDF_derive(HKDF)");  // okm is wiped by its destructor
  }
  return okm;
}

}  // namespace kmsfs::crypto
