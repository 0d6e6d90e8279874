#include "keyd/store/root_key.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/base/unique_fd.h"
#include "common/crypto/random.h"

namespace kmsfs::keyd {
namespace {

std::string ModeString(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// read() until `out` is full or EOF; returns the byte count.
Result<size_t> ReadFull(int fd, std::span<uint8_t> out, const std::string& what) {
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("read " + what, errno);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

std::string_view RootKeySourceName(RootKeySource s) {
  switch (s) {
    case RootKeySource::kCredential:
      return "systemd credential";
    case RootKeySource::kKeyFile:
      return "key file";
    case RootKeySource::kPassphrase:
      return "passphrase";
  }
  return "?";
}

Result<crypto::RootKey> ReadRootKeyFile(const std::string& path) {
  // O_NONBLOCK so that a FIFO planted at the path cannot hang startup; fstat then checks the file
  // we actually opened (no check-then-open race).
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) return Error::FromErrno("open root key file " + path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::FromErrno("stat root key file " + path, errno);
  if (!S_ISREG(st.st_mode)) {
    return Error(Code::kPermissionDenied, "root key file " + path + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    return Error(Code::kPermissionDenied,
                 "root key file " + path + " has mode " + ModeString(st.st_mode) +
                     ": a root key must be readable and writable by its owner only. "
                     "Fix: chmod 600 " +
                     path);
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return Error(Code::kPermissionDenied,
                 "root key file " + path + " is owned by uid " + std::to_string(st.st_uid) +
                     ", neither this process (uid " + std::to_string(::geteuid()) +
                     ") nor root, who alone may control it. Fix: chown it");
  }
  const auto wrong_size = [&](uint64_t size) {
    return Error(Code::kInvalidArgument,
                 "root key file " + path + " holds " + std::to_string(size) +
                     " bytes; it must hold exactly 32 raw random bytes (no newline, not hex). "
                     "Make one with: head -c 32 /dev/urandom > FILE");
  };
  if (st.st_size != static_cast<off_t>(crypto::RootKey::kSize)) {
    return wrong_size(static_cast<uint64_t>(st.st_size));
  }
  crypto::RootKey key;  // read straight into locked memory
  KMSFS_ASSIGN_OR_RETURN(size_t got, ReadFull(fd.get(), key.mutable_span(), path));
  uint8_t extra = 0;  // one more byte must be EOF (the file may have changed since fstat)
  KMSFS_ASSIGN_OR_RETURN(size_t more, ReadFull(fd.get(), std::span<uint8_t>(&extra, 1), path));
  crypto::Wipe(std::span<uint8_t>(&extra, 1));
  if (got != crypto::RootKey::kSize || more != 0) return wrong_size(got + more);
  return key;
}

Result<crypto::SecretBytes> ReadPassphrase(int fd) {
  crypto::SecretBytes buf(kMaxPassphraseLen + 1);
  size_t len = 0;
  // One byte at a time: stop exactly at the end of the first line, consuming nothing after it
  // (the fd may be a shared pipe or terminal). A passphrase is short; this costs nothing.
  while (true) {
    if (len == buf.size()) {
      return Error(Code::kInvalidArgument,
                   "passphrase is longer than " + std::to_string(kMaxPassphraseLen) + " bytes");
    }
    const ssize_t n = ::read(fd, buf.data() + len, 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("read passphrase from fd " + std::to_string(fd), errno);
    }
    if (n == 0 || buf.data()[len] == '\n') break;
    ++len;
  }
  if (len > 0 && buf.data()[len - 1] == '\r') --len;
  if (len == 0) return Error(Code::kInvalidArgument, "empty passphrase");
  return crypto::SecretBytes::CopyFrom(buf.span().first(len));  // `buf` is wiped on return
}

KdfParams NewKdfParams(const crypto::ScryptParams& cost) {
  KdfParams k;
  k.salt.resize(kKdfSaltLen);
  crypto::RandomBytes(k.salt);
  k.n = cost.n;
  k.r = cost.r;
  k.p = cost.p;
  return k;
}

Result<crypto::RootKey> DeriveRootKey(const crypto::SecretBytes& passphrase, const KdfParams& kdf) {
  if (kdf.salt.size() < 16) return Error(Code::kCorrupt, "stored passphrase salt is too short");
  const crypto::ScryptParams params{kdf.n, kdf.r, kdf.p};
  KMSFS_ASSIGN_OR_RETURN(
      crypto::SecretBytes derived,
      crypto::Scrypt(passphrase.span(), kdf.salt, params, crypto::RootKey::kSize));
  return crypto::RootKey::FromBytes(std::move(derived));
}

Result<LoadedRootKey> LoadRootKey(const RootKeyOptions& options, const StateInfo& state) {
  LoadedRootKey out;
  const std::string credential = options.credentials_dir.empty()
                                     ? std::string()
                                     : options.credentials_dir + "/" + kRootKeyCredentialName;
  if (!credential.empty() && Exists(credential)) {
    out.source = RootKeySource::kCredential;
    out.origin = credential;
  } else if (!options.key_file.empty()) {
    out.source = RootKeySource::kKeyFile;
    out.origin = options.key_file;
  } else if (options.passphrase_fd >= 0) {
    out.source = RootKeySource::kPassphrase;
    out.origin = "fd " + std::to_string(options.passphrase_fd);
  } else {
    return Error(Code::kInvalidArgument,
                 std::string("no root key given: use the systemd credential ") +
                     kRootKeyCredentialName + " (LoadCredentialEncrypted=), --root-key-file FILE " +
                     "or --passphrase-fd N");
  }

  if (out.source != RootKeySource::kPassphrase) {
    if (state.kdf) {
      return Error(Code::kFailedPrecondition,
                   "this state is sealed with a passphrase-derived root key; use --passphrase-fd "
                   "(" +
                       std::string(RootKeySourceName(out.source)) + " " + out.origin + " given)");
    }
    KMSFS_ASSIGN_OR_RETURN(out.key, ReadRootKeyFile(out.origin));
    return out;
  }

  if (state.initialized && !state.kdf) {
    return Error(Code::kFailedPrecondition,
                 "this state is sealed with a root key from a key file or credential, not a "
                 "passphrase; use --root-key-file or the systemd credential");
  }
  KdfParams kdf = state.initialized ? *state.kdf : NewKdfParams(options.new_kdf);
  KMSFS_ASSIGN_OR_RETURN(crypto::SecretBytes passphrase, ReadPassphrase(options.passphrase_fd));
  KMSFS_ASSIGN_OR_RETURN(out.key, DeriveRootKey(passphrase, kdf));
  out.kdf_params = std::move(kdf);
  return out;
}

Result<OpenedKeyStore> OpenKeyStore(const std::string& dir, const RootKeyOptions& root_options,
                                    KeyStore::Options store_options) {
  KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<Env> env, Env::Open(dir, store_options.env));
  KMSFS_ASSIGN_OR_RETURN(StateInfo state, KeyStore::Probe(*env));
  KMSFS_ASSIGN_OR_RETURN(LoadedRootKey root, LoadRootKey(root_options, state));
  store_options.kdf_params = root.kdf_params;  // stored only if Open initializes a fresh state
  OpenedKeyStore out;
  KMSFS_ASSIGN_OR_RETURN(out.store,
                         KeyStore::Open(std::move(env), root.key, std::move(store_options)));
  out.source = root.source;
  out.origin = std::move(root.origin);
  return out;
}

}  // namespace kmsfs::keyd
