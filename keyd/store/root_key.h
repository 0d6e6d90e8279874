// LoadRootKey: obtains keyd's root key from a systemd credential, a key file, or a passphrase.
//
// Order of preference (the first source present wins):
//   1. the systemd credential $CREDENTIALS_DIRECTORY/kmsfs-root-key (LoadCredentialEncrypted=,
//      typically TPM2-sealed by systemd-creds): exactly 32 raw bytes;
//   2. --root-key-file FILE: exactly 32 raw bytes (make one: head -c 32 /dev/urandom > FILE);
//   3. --passphrase-fd N: the first line read from fd N, stretched with scrypt. The salt and cost
//      parameters live in the state's meta database; a fresh state gets a new random salt and
//      crypto::ScryptParams' defaults, which KeyStore::Open stores when it initializes the state.
// Key files and credentials must be regular files that only their owner (us or root) can read or
// write; anything else is refused with a message naming the path, its mode and the fix.
// Key bytes go straight into locked memory (crypto::SecretBytes); nothing is left in plain buffers.
// Thread-compatible: call at startup. Never logs; errors never contain key bytes.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/base/status.h"
#include "common/crypto/kdf.h"
#include "common/crypto/secret.h"
#include "keyd/store/key_store.h"
#include "keyd/store/records.h"

namespace kmsfs::keyd {

inline constexpr char kRootKeyCredentialName[] = "kmsfs-root-key";
inline constexpr size_t kMaxPassphraseLen = 1024;
inline constexpr size_t kKdfSaltLen = 32;

struct RootKeyOptions {
  std::string credentials_dir;   // $CREDENTIALS_DIRECTORY as main() found it; empty: none
  std::string key_file;          // --root-key-file; empty: none
  int passphrase_fd = -1;        // --passphrase-fd; -1: none. Read, not closed.
  crypto::ScryptParams new_kdf;  // cost for a fresh state's passphrase (tests lower it)
};

enum class RootKeySource { kCredential, kKeyFile, kPassphrase };
std::string_view RootKeySourceName(RootKeySource s);  // "systemd credential", ...

struct LoadedRootKey {
  crypto::RootKey key;
  RootKeySource source = RootKeySource::kKeyFile;
  std::string origin;                   // the path or "fd N", for keyd's startup log line
  std::optional<KdfParams> kdf_params;  // passphrase only: the parameters the key was derived with
};

// `state` is KeyStore::Probe of the state dir. kInvalidArgument when no source is given or a key
// has the wrong length; kPermissionDenied for unsafe files; kFailedPrecondition when the source
// kind does not match the state (passphrase state opened with a key file, or the reverse);
// kIo for read errors.
Result<LoadedRootKey> LoadRootKey(const RootKeyOptions& options, const StateInfo& state);

// The building blocks, exposed for tests and for `kmsctl`-side tooling.
Result<crypto::RootKey> ReadRootKeyFile(const std::string& path);
Result<crypto::SecretBytes> ReadPassphrase(int fd);        // first line, without its newline
KdfParams NewKdfParams(const crypto::ScryptParams& cost);  // fresh random salt
Result<crypto::RootKey> DeriveRootKey(const crypto::SecretBytes& passphrase, const KdfParams& kdf);

// keyd's startup in one call: Env::Open, Probe, LoadRootKey, KeyStore::Open (storing the KDF
// parameters of a fresh passphrase state). Errors as the four steps.
struct OpenedKeyStore {
  std::unique_ptr<KeyStore> store;
  RootKeySource source = RootKeySource::kKeyFile;
  std::string origin;
};
Result<OpenedKeyStore> OpenKeyStore(const std::string& dir, const RootKeyOptions& root_options,
                                    KeyStore::Options store_options);

}  // namespace kmsfs::keyd
