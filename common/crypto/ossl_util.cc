#include "common/crypto/ossl_util.h"

#include <openssl/err.h>

#include <string>

namespace kmsfs::crypto::internal {

Error OpenSslError(std::string_view what) {
  std::string msg(what);
  msg += " failed";
  const unsigned long code = ERR_get_error();  // NOLINT(google-runtime-int): OpenSSL's type
  if (code != 0) {
    const char* reason = ERR_reason_error_string(code);
    if (reason != nullptr) {
      msg += ": ";
      msg += reason;
    }
  }
  ERR_clear_error();
  return Error(Code::kInternal, std::move(msg));
}

void ClearOpenSslErrors() { ERR_clear_error(); }

}  // namespace kmsfs::crypto::internal
