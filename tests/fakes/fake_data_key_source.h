// FakeDataKeySource: an in-process DataKeySource that wraps with a fixed test master key.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <set>
#include <string>

#include "common/crypto/secret.h"
#include "fs/core/data_key_source.h"

namespace kmsfs::fakes {

// Wraps and unwraps with crypto::WrapKey/UnwrapKey under one fixed master key (test-only bytes,
// never used outside tests), so blobs are real v1 wrapped blobs bound to their encryption
// context: a wrong context or a changed byte fails as keyd's InvalidCiphertextException does
// (kCorrupt). Policy is simulated with deny lists (kPermissionDenied), key state with
// SetDisabled (kKeyUnavailable) and SetUnavailable (kUnavailable, keyd down). Counts calls so
// tests can check that every open asked. Thread-safe.
class FakeDataKeySource final : public fs::DataKeySource {
 public:
  static constexpr char kKeyId[] = "fake-key-0001";
  static constexpr char kAlias[] = "alias/fake";
  static constexpr uint32_t kKeyVersion = 1;

  FakeDataKeySource();

  Result<fs::NewDataKey> GenerateDataKey(const std::string& key_id,
                                         const format::EncryptionContext& ctx,
                                         const fs::Requester& who) override;
  Result<crypto::SecretBytes> Decrypt(ByteSpan wrapped, const format::EncryptionContext& ctx,
                                      const fs::Requester& who) override;

  void DenyPath(const std::string& path);
  void DenyUid(uid_t uid);
  void AllowAll();
  void SetDisabled(bool disabled);
  void SetUnavailable(bool unavailable);

  int generate_calls() const;
  int decrypt_calls() const;
  fs::Requester last_requester() const;
  format::EncryptionContext last_context() const;

 private:
  Status CheckLocked(const fs::Requester& who) const;

  const crypto::MasterKey master_;
  mutable std::mutex mu_;
  std::set<std::string> denied_paths_;  // guarded by mu_
  std::set<uid_t> denied_uids_;         // guarded by mu_
  bool disabled_ = false;               // guarded by mu_
  bool unavailable_ = false;            // guarded by mu_
  int generate_calls_ = 0;              // guarded by mu_
  int decrypt_calls_ = 0;               // guarded by mu_
  fs::Requester last_requester_;        // guarded by mu_
  format::EncryptionContext last_context_;  // guarded by mu_
};

}  // namespace kmsfs::fakes
