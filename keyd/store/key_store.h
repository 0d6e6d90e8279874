// KeyStore: keyd's persistent state (keys, versions, sealed material, aliases) in LMDB.
//
// Layout (named databases of one Env; records encoded as in records.h):
//   meta      "format" → {StateFormatVersion, CreationDate}; "root_check" → sealed verifier;
//             "kdf" → scrypt parameters, present iff the root key came from a passphrase;
//             "recovery" → the root key sealed under a recovery code (recovery.h), optional
//   keys      KEYID → KeyRecord            versions  KEYID/%08x → KeyVersion
//   material  KEYID/%08x → sealed master key material (sealed.h), absent once destroyed
//   aliases   alias/NAME → AliasRecord
// "audit" and "audit_meta" belong to keyd/audit (same Env, opened through env()).
//
// Crash consistency: every mutating call is exactly one LMDB write transaction, committed (and
// fsync'ed) before it returns OK, so a SIGKILL or power loss at any instant leaves either all of
// it or none of it. `also` (a TxnHook) runs inside that same transaction just before the commit:
// the audit module writes its record there when a change and its record must stand or fall
// together. A failing hook aborts everything. Hooks must not call back into the store.
//
// Threading: thread-safe. Readers run concurrently on their own read snapshots; writers are
// serialized by LMDB's writer lock. Lock order: root_mu_ (shared for every call that seals or
// unseals; exclusive only in ChangeRootKey) before the LMDB writer lock. Material is returned in
// crypto::MasterKey (locked memory), decrypted inside the read transaction straight from the map.
//
// Mutations take a key id, never an alias: the caller resolves an alias once (GetKey), decides
// on that key (policy), and then acts on exactly that key; an alias re-pointed in between cannot
// redirect the change.
//
// Crypto-shredding caveat: LMDB does not wipe freed pages. After DestroyVersion/DestroyKey (and,
// for blobs sealed under the old root key, after ChangeRootKey) superseded sealed bytes — never
// plaintext — may persist in data.mdb until their pages are reused. A compacted Backup never
// holds freed pages: restoring from one and discarding the old data.mdb (and older backups) purges
// them, and destroyed material is then gone even for a holder of the root key. The offline
// commands that re-seal (change-root-key, restore with a recovery code) rewrite data.mdb compacted
// themselves (CompactStateDir, maintenance.h); a running keyd cannot.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/status.h"
#include "common/crypto/secret.h"
#include "keyd/store/lmdb_env.h"
#include "keyd/store/records.h"
#include "keyd/store/recovery.h"

namespace kmsfs::keyd {

inline constexpr int kStateFormatVersion = 1;

// What a state directory holds before any root key is known (for LoadRootKey).
struct StateInfo {
  bool initialized = false;
  std::optional<KdfParams> kdf;  // set iff initialized with a passphrase-derived root key
  bool recovery_escrow = false;  // a recovery code can unseal the root key (SetRecoveryCode)
};

template <class T>
struct Page {
  std::vector<T> items;
  std::string next_marker;  // empty when this is the last page; else pass it as `marker`
};

// A key together with one version's material, read from a single snapshot.
struct KeyMaterial {
  KeyRecord key;
  uint32_t version = 0;
  crypto::MasterKey material;
};

class KeyStore {
 public:
  using TxnHook = std::function<Status(WriteTxn&)>;
  struct Options {
    Env::Options env;                     // only for Open(dir, ...)
    std::function<int64_t()> clock;       // unix seconds; default ::time()
    std::optional<KdfParams> kdf_params;  // stored when a fresh state is initialized; else unused
  };

  // Read-only look at `env`: writes nothing, needs no key.
  static Result<StateInfo> Probe(Env& env);
  // Opens (initializing an empty dir) the state. For existing state, the root key is checked
  // against the stored verifier before anything is written: kPermissionDenied "wrong root key: ..."
  // and nothing changes on disk. kFailedPrecondition for a state written by a newer kmsfs.
  static Result<std::unique_ptr<KeyStore>> Open(std::unique_ptr<Env> env,
                                                const crypto::RootKey& root_key, Options options);
  static Result<std::unique_ptr<KeyStore>> Open(const std::string& dir,
                                                const crypto::RootKey& root_key, Options options);
  static Result<std::unique_ptr<KeyStore>> Open(const std::string& dir,
                                                const crypto::RootKey& root_key) {
    return Open(dir, root_key, Options{});
  }

  // A new Enabled key with fresh random material as version 1 (INITIAL), rotation off.
  // kInvalidArgument if the fields exceed ValidateKeyRecord's limits.
  Result<KeyRecord> CreateKey(std::string description, std::vector<KeyTag> tags, std::string policy,
                              const TxnHook& also = {});
  // `key_id_or_alias` is a key id or "alias/NAME". kNotFound, or kInvalidArgument if it is neither.
  Result<KeyRecord> GetKey(std::string_view key_id_or_alias) const;
  // Keys in key-id order, including Destroyed tombstones. limit 1..1000; marker "" or a
  // next_marker. kInvalidArgument otherwise.
  Result<Page<KeyRecord>> ListKeys(size_t limit, std::string_view marker) const;
  // Read-modify-write of one key record inside the write transaction (no lost updates). `mutate`
  // may change state, description, tags, policy, rotation and deletion fields; the result must pass
  // ValidateKeyRecord. It may not change identity fields or PrimaryVersion, revive a Destroyed key
  // or make one Destroyed (DestroyKey does that) — kInvalidArgument/kFailedPrecondition.
  Result<KeyRecord> UpdateKey(std::string_view key_id,
                              const std::function<Status(KeyRecord&)>& mutate,
                              const TxnHook& also = {});
  // Fresh material as version primary+1, made primary, in one transaction; `update_key` (optional)
  // edits the key record in it too (e.g. NextRotationDate). `type` is kAutomatic or kOnDemand.
  // kFailedPrecondition for a key that is PendingDeletion or Destroyed. Returns the new version.
  Result<uint32_t> AddVersion(std::string_view key_id, RotationType type,
                              const std::function<Status(KeyRecord&)>& update_key = {},
                              const TxnHook& also = {});
  // kNotFound if there is no such version; kKeyUnavailable if it is Retired or Destroyed; kCorrupt
  // if the sealed material does not authenticate. Does not look at the key's state (the caller
  // decides what Disabled means for its operation).
  Result<crypto::MasterKey> GetVersionMaterial(std::string_view key_id, uint32_t version) const;
  // The key (id or alias) and the material of `version` (default: the primary), one snapshot.
  Result<KeyMaterial> GetKeyMaterial(std::string_view key_id_or_alias,
                                     std::optional<uint32_t> version = std::nullopt) const;
  Result<std::vector<KeyVersion>> ListVersions(std::string_view key_id) const;
  // Enabled → Retired (material kept, no longer served). Idempotent. kFailedPrecondition for the
  // primary version or a Destroyed one.
  Status RetireVersion(std::string_view key_id, uint32_t version, const TxnHook& also = {});
  // Retired → Destroyed: deletes the sealed material. Idempotent. kFailedPrecondition unless
  // Retired, or if the version's scheduled DestructionDate (ScheduleVersionDestruction) has not
  // passed yet (a retirement cancelled and redone with a later date is never destroyed early).
  Status DestroyVersion(std::string_view key_id, uint32_t version, const TxnHook& also = {});
  // The RetireKeyVersion operation: Enabled → Retired at once (no longer served) with
  // DestructionDate = `destruction_date`, when the scheduler destroys its material. `check` (may
  // be empty) sees the key record inside the transaction and may veto (e.g. a state check).
  // kFailedPrecondition for the primary version, a key PendingDeletion/Destroyed, or a version
  // already Retired (cancel first) or Destroyed; kNotFound for no such version.
  Result<KeyVersion> ScheduleVersionDestruction(
      std::string_view key_id, uint32_t version, int64_t destruction_date,
      const std::function<Status(const KeyRecord&, const KeyVersion&)>& check = {},
      const TxnHook& also = {});
  // Retired → Enabled (DestructionDate cleared): the version serves again. kFailedPrecondition
  // unless Retired (a Destroyed version cannot come back). `check` as above.
  Result<KeyVersion> CancelVersionRetirement(
      std::string_view key_id, uint32_t version,
      const std::function<Status(const KeyRecord&, const KeyVersion&)>& check = {},
      const TxnHook& also = {});
  // The end of a deletion: for a PendingDeletion key whose DeletionDate has passed, deletes all
  // its material and aliases and leaves a Destroyed tombstone (key and version records).
  Status DestroyKey(std::string_view key_id, const TxnHook& also = {});

  // Aliases. kInvalidArgument for a bad name (ValidateAliasName) or target (not a key id);
  // kNotFound for a missing target; kFailedPrecondition for a PendingDeletion/Destroyed target.
  Result<AliasRecord> CreateAlias(std::string_view alias, std::string_view key_id,
                                  const TxnHook& also = {});  // kAlreadyExists if taken
  Result<AliasRecord> UpdateAlias(std::string_view alias, std::string_view key_id,
                                  const TxnHook& also = {});  // kNotFound if no such alias
  Status DeleteAlias(std::string_view alias, const TxnHook& also = {});  // kNotFound if none
  // Aliases in name order, optionally only those of `key_id`. limit 1..1000 as ListKeys.
  Result<Page<AliasRecord>> ListAliases(std::optional<std::string> key_id, size_t limit,
                                        std::string_view marker) const;

  // For keyd's scheduler (a scan over all keys): Enabled keys with rotation on and
  // NextRotationDate <= now; PendingDeletion keys with DeletionDate <= now.
  Result<std::vector<std::string>> KeysDueForRotation(int64_t now) const;
  Result<std::vector<std::string>> KeysDueForDeletion(int64_t now) const;
  // Retired versions with a DestructionDate <= now (of keys not yet Destroyed), in key order.
  Result<std::vector<KeyVersion>> VersionsDueForDestruction(int64_t now) const;

  // Re-seals every version's material and the verifier under `new_root`, and sets (or, when
  // nullopt, removes) the stored passphrase KDF parameters — all in one transaction. Afterwards
  // only `new_root` opens the state. kCorrupt (and no change) if any material fails to unseal.
  // A recovery escrow is removed in the same transaction (it holds the old root key, and the
  // code that opens it is not known here): make a new code with SetRecoveryCode.
  //
  // Recovery escrow (docs/lifecycle.md): SetRecoveryCode stores the current root key sealed
  // under `code` (replacing an older escrow); every later Backup carries it. RecoverRootKey opens
  // the escrow of a state (typically a restored backup) with a code and checks the result
  // against the state's verifier: kNotFound if the state has no escrow, kPermissionDenied for a
  // wrong code. It writes nothing.
  Status SetRecoveryCode(const RecoveryCode& code, const TxnHook& also = {});
  static Result<crypto::RootKey> RecoverRootKey(Env& env, const RecoveryCode& code);
  Status ChangeRootKey(const crypto::RootKey& new_root, std::optional<KdfParams> kdf_params,
                       const TxnHook& also = {});
  // A consistent, compacted online copy of the whole state into a NEW file `path` (0600, fsync'ed,
  // and its directory entry fsync'ed). kAlreadyExists if `path` exists. Restore: a fresh 0700 dir
  // holding the file as data.mdb (mode 0600). The copy is as secret as the state (sealed material).
  Status Backup(const std::string& path) const;

  // The environment, for keyd/audit's databases and transactions. Valid as long as the store.
  Env& env() const { return *env_; }

  ~KeyStore();
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;

 private:
  struct Dbs {
    Db meta, keys, versions, material, aliases;
  };
  KeyStore(std::unique_ptr<Env> env, Dbs dbs, crypto::RootKey root, std::function<int64_t()> clock);
  int64_t Now() const { return clock_(); }
  Status CommitWith(WriteTxn& txn, const TxnHook& also) const;

  std::unique_ptr<Env> env_;
  const Dbs dbs_;
  const std::function<int64_t()> clock_;
  mutable std::shared_mutex root_mu_;
  crypto::RootKey root_key_;  // GUARDED_BY(root_mu_)
};

}  // namespace kmsfs::keyd
