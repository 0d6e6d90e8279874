// scrypt via OpenSSL 3.0's EVP_KDF "SCRYPT". We validate the parameters ourselves (with a clear
// error) and then pass maxmem_bytes equal to the computed need, so OpenSSL's own memory check
// (default limit 1025 MiB) can never be the one that refuses.
#include "common/crypto/kdf.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <limits>
#include <memory>

#include "common/crypto/ossl_util.h"

namespace kmsfs::crypto {
namespace {

using internal::FreeWith;
using internal::OpenSslError;
using KdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, FreeWith<&EVP_KDF_CTX_free>>;

constexpr size_t kMaxOutputLen = 1024;

EVP_KDF* ScryptAlgorithm() {
  static EVP_KDF* const kScrypt = EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_SCRYPT, nullptr);
  return kScrypt;
}

OSSL_PARAM OctetParam(const char* name, ByteSpan b) {
  // OSSL_PARAM takes void* but only reads octet-string inputs. An empty passphrase or salt still
  // needs a non-NULL pointer to be treated as "set".
  static uint8_t empty = 0;
  uint8_t* p = b.empty() ? &empty : const_cast<uint8_t*>(b.data());
  return OSSL_PARAM_construct_octet_string(name, p, b.size());
}

}  // namespace

uint64_t ScryptMemoryBytes(const ScryptParams& params) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  if (params.r == 0) return kMax;  // invalid; Scrypt() rejects it with a clearer message
  // OpenSSL (crypto/evp/pbe_scrypt.c): B = 128 * r * p, V = 128 * r * (N + 2).
  const uint64_t r128 = uint64_t{128} * params.r;
  if (params.n > kMax - 2 || (params.n + 2) > kMax / r128) return kMax;
  const uint64_t v = r128 * (params.n + 2);
  if (params.p > kMax / r128) return kMax;
  const uint64_t b = r128 * params.p;
  if (v > kMax - b) return kMax;
  return v + b;
}

Result<SecretBytes> Scrypt(ByteSpan passphrase, ByteSpan salt, const ScryptParams& params,
                           size_t out_len) {
  if (params.n < 2 || (params.n & (params.n - 1)) != 0) {
    return Error(Code::kInvalidArgument, "scrypt N must be a power of two >= 2");
  }
  if (params.r == 0 || params.p == 0) {
    return Error(Code::kInvalidArgument, "scrypt r and p must be >= 1");
  }
  if (uint64_t{params.r} * params.p >= (uint64_t{1} << 30)) {
    return Error(Code::kInvalidArgument, "scrypt r * p must be < 2^30");
  }
  // RFC 7914 §2: N < 2^(128 * r / 8).
  if (params.r < 4 && params.n >= (uint64_t{1} << (16 * params.r))) {
    return Error(Code::kInvalidArgument, "scrypt N too large for r");
  }
  const uint64_t mem = ScryptMemoryBytes(params);
  if (mem > kScryptMaxMemoryBytes) {
    return Error(Code::kInvalidArgument, "scrypt parameters need more than 1 GiB of memory");
  }
  if (out_len == 0 || out_len > kMaxOutputLen) {
    return Error(Code::kInvalidArgument, "scrypt output length out of range");
  }

  EVP_KDF* kdf = ScryptAlgorithm();
  if (kdf == nullptr) return OpenSslError("EVP_KDF_fetch(SCRYPT)");
  KdfCtxPtr ctx(EVP_KDF_CTX_new(kdf));
  if (!ctx) return OpenSslError("EVP_KDF_CTX_new(SCRYPT)");

  uint64_t n = params.n;
  uint32_t r = params.r;
  uint32_t p = params.p;
  uint64_t maxmem = mem;
  const OSSL_PARAM ossl_params[] = {
      OctetParam(OSSL_KDF_PARAM_PASSWORD, passphrase),
      OctetParam(OSSL_KDF_PARAM_SALT, salt),
      OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
      OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
      OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p),
      OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
      OSSL_PARAM_construct_end(),
  };
  SecretBytes out(out_len);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), ossl_params) != 1) {
    return OpenSslError("EVP_KDF_derive(SCRYPT)");
  }
  return out;  // the KDF context cleanses its copy of the passphrase when freed
}

}  // namespace kmsfs::crypto
