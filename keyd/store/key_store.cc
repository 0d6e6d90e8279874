#include "keyd/store/key_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <limits>
#include <mutex>
#include <utility>

#include "common/base/unique_fd.h"
#include "common/crypto/random.h"
#include "keyd/store/sealed.h"

namespace kmsfs::keyd {
namespace {

constexpr char kMetaDb[] = "meta";
constexpr char kKeysDb[] = "keys";
constexpr char kVersionsDb[] = "versions";
constexpr char kMaterialDb[] = "material";
constexpr char kAliasesDb[] = "aliases";
constexpr char kFormatKey[] = "format";
constexpr char kRootCheckKey[] = "root_check";
constexpr char kKdfKey[] = "kdf";
constexpr char kRecoveryKey[] = "recovery";
constexpr size_t kMaxPageSize = 1000;

Error Corrupt(std::string msg) { return Error(Code::kCorrupt, std::move(msg)); }
Error Precondition(std::string msg) { return Error(Code::kFailedPrecondition, std::move(msg)); }

Status CheckKeyIdArg(std::string_view key_id) {
  if (IsValidKeyId(key_id)) return Status::Ok();
  return Error(Code::kInvalidArgument, "not a key id: " + std::string(key_id.substr(0, 64)));
}

Status CheckLimit(size_t limit) {
  if (limit >= 1 && limit <= kMaxPageSize) return Status::Ok();
  return Error(Code::kInvalidArgument, "Limit must be 1 to 1000");
}

// Keeps an error from a Scan callback, which can only say "stop".
struct ScanError {
  Status status;
  bool Stop(Status s) {
    status = std::move(s);
    return false;
  }
};

// ---- record access inside a transaction (any snapshot, read or write)
// ----------------------------

Result<KeyRecord> ReadKey(const TxnBase& txn, Db keys, std::string_view key_id) {
  auto text = txn.Get(keys, key_id);
  if (!text.ok()) {
    if (text.error().code() == Code::kNotFound) {
      return Error(Code::kNotFound, "key " + std::string(key_id) + " not found");
    }
    return text.error();
  }
  KMSFS_ASSIGN_OR_RETURN(KeyRecord r, DecodeKeyRecord(*text));
  if (r.key_id != key_id)
    return Corrupt("key record " + std::string(key_id) + " names another key");
  return r;
}

// A key id, or the target of "alias/NAME".
Result<std::string> ResolveKeyId(const TxnBase& txn, Db aliases, std::string_view key_id_or_alias) {
  if (key_id_or_alias.substr(0, 6) == "alias/") {
    KMSFS_RETURN_IF_ERROR(ValidateAliasName(key_id_or_alias));
    auto text = txn.Get(aliases, key_id_or_alias);
    if (!text.ok()) {
      if (text.error().code() == Code::kNotFound) {
        return Error(Code::kNotFound, "alias " + std::string(key_id_or_alias) + " not found");
      }
      return text.error();
    }
    KMSFS_ASSIGN_OR_RETURN(AliasRecord a, DecodeAlias(*text));
    if (a.alias_name != key_id_or_alias || !IsValidKeyId(a.target_key_id)) {
      return Corrupt("alias record " + std::string(key_id_or_alias) + " is inconsistent");
    }
    return a.target_key_id;
  }
  if (!IsValidKeyId(key_id_or_alias)) {
    return Error(Code::kInvalidArgument,
                 "not a key id or alias/NAME: " + std::string(key_id_or_alias.substr(0, 64)));
  }
  return std::string(key_id_or_alias);
}

Result<KeyVersion> ReadVersion(const TxnBase& txn, Db versions, std::string_view key_id,
                               uint32_t version) {
  auto text = txn.Get(versions, VersionKey(key_id, version));
  if (!text.ok()) {
    if (text.error().code() == Code::kNotFound) {
      return Error(Code::kNotFound,
                   "key " + std::string(key_id) + " has no version " + std::to_string(version));
    }
    return text.error();
  }
  KMSFS_ASSIGN_OR_RETURN(KeyVersion v, DecodeKeyVersion(*text));
  if (v.key_id != key_id || v.version != version) {
    return Corrupt("version record " + VersionKey(key_id, version) + " names another version");
  }
  return v;
}

// Unseals inside `txn`, straight from the map into locked memory.
Result<crypto::MasterKey> ReadMaterial(const TxnBase& txn, Db material, const crypto::RootKey& root,
                                       std::string_view key_id, uint32_t version) {
  std::optional<crypto::MasterKey> out;
  Status s = txn.View(material, VersionKey(key_id, version), [&](ByteSpan sealed) -> Status {
    KMSFS_ASSIGN_OR_RETURN(crypto::MasterKey k, UnsealMaterial(root, key_id, version, sealed));
    out.emplace(std::move(k));
    return Status::Ok();
  });
  if (!s.ok()) {
    if (s.code() == Code::kNotFound) {
      return Corrupt("key " + std::string(key_id) + " version " + std::to_string(version) +
                     " is Enabled but its material is missing");
    }
    return s.error();
  }
  return std::move(*out);
}

// The usable-version check shared by every material read.
Status CheckServable(const KeyVersion& v) {
  if (v.state == VersionState::kEnabled) return Status::Ok();
  return Error(Code::kKeyUnavailable, "key " + v.key_id + " version " + std::to_string(v.version) +
                                          " is " + std::string(VersionStateName(v.state)));
}

Status PutKey(WriteTxn& txn, Db keys, const KeyRecord& r, PutMode mode = PutMode::kUpsert) {
  KMSFS_RETURN_IF_ERROR(ValidateKeyRecord(r));
  KMSFS_ASSIGN_OR_RETURN(std::string text, EncodeKeyRecord(r));
  return txn.Put(keys, r.key_id, text, mode);
}

Status PutVersion(WriteTxn& txn, Db versions, const KeyVersion& v,
                  PutMode mode = PutMode::kUpsert) {
  KMSFS_ASSIGN_OR_RETURN(std::string text, EncodeKeyVersion(v));
  return txn.Put(versions, VersionKey(v.key_id, v.version), text, mode);
}

// What UpdateKey's (and AddVersion's) callers may not do to a key record.
Status ValidateKeyChange(const KeyRecord& before, const KeyRecord& after, bool primary_may_change) {
  if (after.key_id != before.key_id || after.creation_date != before.creation_date ||
      after.key_usage != before.key_usage || after.key_spec != before.key_spec ||
      after.origin != before.origin) {
    return Error(Code::kInvalidArgument,
                 "KeyId, CreationDate, KeyUsage, KeySpec and Origin cannot change");
  }
  if (!primary_may_change && after.primary_version != before.primary_version) {
    return Error(Code::kInvalidArgument, "PrimaryVersion changes only by adding a version");
  }
  if (after.key_state == KeyState::kDestroyed) {
    return Error(Code::kInvalidArgument, "a key becomes Destroyed only through DestroyKey");
  }
  return ValidateKeyRecord(after);
}

Status CheckAliasTarget(const KeyRecord& k) {
  if (k.key_state == KeyState::kPendingDeletion || k.key_state == KeyState::kDestroyed) {
    return Precondition("key " + k.key_id + " is " + std::string(KeyStateName(k.key_state)) +
                        "; an alias cannot point to it");
  }
  return Status::Ok();
}

// Up to `limit` decoded records after `marker` (optionally filtered), plus the next marker.
template <class T, class Decode, class Keep>
Result<Page<T>> ListPage(const TxnBase& txn, Db db, size_t limit, std::string_view marker,
                         Decode decode, Keep keep) {
  Page<T> page;
  ScanError err;
  bool more = false;
  std::string last;
  KMSFS_RETURN_IF_ERROR(txn.Scan(db, "", marker, [&](std::string_view k, std::string_view v) {
    Result<T> r = decode(k, v);
    if (!r.ok()) return err.Stop(r.status());
    if (!keep(*r)) return true;
    if (page.items.size() == limit) {
      more = true;
      return false;
    }
    last = std::string(k);
    page.items.push_back(std::move(*r));
    return true;
  }));
  KMSFS_RETURN_IF_ERROR(err.status);
  if (more) page.next_marker = last;
  return page;
}

Result<KeyRecord> DecodeKeyAt(std::string_view k, std::string_view v) {
  KMSFS_ASSIGN_OR_RETURN(KeyRecord r, DecodeKeyRecord(v));
  if (r.key_id != k) return Corrupt("key record " + std::string(k) + " names another key");
  return r;
}

Result<AliasRecord> DecodeAliasAt(std::string_view k, std::string_view v) {
  KMSFS_ASSIGN_OR_RETURN(AliasRecord a, DecodeAlias(v));
  if (a.alias_name != k) return Corrupt("alias record " + std::string(k) + " names another alias");
  return a;
}

// Every version record of `key_id`, in version order.
Result<std::vector<KeyVersion>> ScanVersions(const TxnBase& txn, Db versions,
                                             std::string_view key_id) {
  std::vector<KeyVersion> out;
  ScanError err;
  const std::string prefix = std::string(key_id) + "/";
  KMSFS_RETURN_IF_ERROR(txn.Scan(versions, prefix, "", [&](std::string_view k, std::string_view v) {
    Result<KeyVersion> r = DecodeKeyVersion(v);
    if (!r.ok()) return err.Stop(r.status());
    if (VersionKey(r->key_id, r->version) != k) {
      return err.Stop(Corrupt("version record " + std::string(k) + " names another version"));
    }
    out.push_back(std::move(*r));
    return true;
  }));
  KMSFS_RETURN_IF_ERROR(err.status);
  return out;
}

Result<std::vector<KeyRecord>> ScanKeys(const TxnBase& txn, Db keys,
                                        const std::function<bool(const KeyRecord&)>& keep) {
  std::vector<KeyRecord> out;
  ScanError err;
  KMSFS_RETURN_IF_ERROR(txn.Scan(keys, "", "", [&](std::string_view k, std::string_view v) {
    Result<KeyRecord> r = DecodeKeyAt(k, v);
    if (!r.ok()) return err.Stop(r.status());
    if (keep(*r)) out.push_back(std::move(*r));
    return true;
  }));
  KMSFS_RETURN_IF_ERROR(err.status);
  return out;
}

Result<bool> IsEmpty(const TxnBase& txn, Db db) {
  bool empty = true;
  KMSFS_RETURN_IF_ERROR(txn.Scan(db, "", "", [&](std::string_view, std::string_view) {
    empty = false;
    return false;
  }));
  return empty;
}

Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return Error::FromErrno("open " + dir, errno);
  if (::fsync(fd.get()) != 0) return Error::FromErrno("fsync " + dir, errno);
  return Status::Ok();
}

}  // namespace

// ---- opening
// --------------------------------------------------------------------------------------

Result<StateInfo> KeyStore::Probe(Env& env) {
  StateInfo info;
  auto meta = env.OpenDb(kMetaDb, /*create=*/false);
  if (!meta.ok()) {
    if (meta.error().code() == Code::kNotFound) return info;
    return meta.error();
  }
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env.BeginRead());
  auto format_text = txn.Get(*meta, kFormatKey);
  if (!format_text.ok()) {
    // No format record: an initialization that never committed. It sealed nothing.
    if (format_text.error().code() == Code::kNotFound) return info;
    return format_text.error();
  }
  KMSFS_ASSIGN_OR_RETURN(StateFormat format, DecodeStateFormat(*format_text));
  if (format.version > static_cast<uint32_t>(kStateFormatVersion)) {
    return Precondition("the state in " + env.dir() + " has format version " +
                        std::to_string(format.version) + ", newer than this kmsfs-keyd reads (" +
                        std::to_string(kStateFormatVersion) + "); run a newer kmsfs-keyd");
  }
  info.initialized = true;
  auto kdf_text = txn.Get(*meta, kKdfKey);
  if (kdf_text.ok()) {
    KMSFS_ASSIGN_OR_RETURN(KdfParams kdf, DecodeKdfParams(*kdf_text));
    info.kdf = std::move(kdf);
  } else if (kdf_text.error().code() != Code::kNotFound) {
    return kdf_text.error();
  }
  auto escrow = txn.Get(*meta, kRecoveryKey);
  if (!escrow.ok() && escrow.error().code() != Code::kNotFound) return escrow.error();
  info.recovery_escrow = escrow.ok();
  return info;
}

Result<std::unique_ptr<KeyStore>> KeyStore::Open(const std::string& dir,
                                                 const crypto::RootKey& root_key, Options options) {
  KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<Env> env, Env::Open(dir, options.env));
  return Open(std::move(env), root_key, std::move(options));
}

Result<std::unique_ptr<KeyStore>> KeyStore::Open(std::unique_ptr<Env> env,
                                                 const crypto::RootKey& root_key, Options options) {
  if (!options.clock) options.clock = [] { return static_cast<int64_t>(::time(nullptr)); };
  const std::string& dir = env->dir();
  KMSFS_ASSIGN_OR_RETURN(StateInfo info, Probe(*env));
  Dbs dbs;
  const char* const kData[] = {kKeysDb, kVersionsDb, kMaterialDb, kAliasesDb};
  Db* const data_dbs[] = {&dbs.keys, &dbs.versions, &dbs.material, &dbs.aliases};

  if (info.initialized) {
    // Check the root key with reads only: a wrong key must leave the files untouched.
    KMSFS_ASSIGN_OR_RETURN(dbs.meta, env->OpenDb(kMetaDb, false));
    {
      KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env->BeginRead());
      Status s = txn.View(dbs.meta, kRootCheckKey,
                          [&](ByteSpan sealed) { return CheckVerifier(root_key, sealed); });
      if (!s.ok()) {
        if (s.code() == Code::kPermissionDenied) {
          return Error(Code::kPermissionDenied,
                       "wrong root key: the state in " + dir + " was sealed with another root key");
        }
        if (s.code() == Code::kNotFound)
          return Corrupt("the state in " + dir + " has no root key verifier");
        return s;
      }
    }
    for (size_t i = 0; i < 4; ++i) {
      auto db = env->OpenDb(kData[i], false);
      if (!db.ok()) {
        if (db.error().code() == Code::kNotFound) {
          return Corrupt("the state in " + dir + " lacks its " + kData[i] + " database");
        }
        return db.error();
      }
      *data_dbs[i] = *db;
    }
  } else {
    // Fresh state (or one whose initialization crashed before its final commit). The databases
    // are created first, each in its own small transaction; the state counts as initialized only
    // once the format record and verifier are committed together, last.
    KMSFS_ASSIGN_OR_RETURN(dbs.meta, env->OpenDb(kMetaDb, true));
    for (size_t i = 0; i < 4; ++i) {
      KMSFS_ASSIGN_OR_RETURN(*data_dbs[i], env->OpenDb(kData[i], true));
    }
    {
      KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env->BeginRead());
      for (size_t i = 0; i < 4; ++i) {
        KMSFS_ASSIGN_OR_RETURN(bool empty, IsEmpty(txn, *data_dbs[i]));
        if (!empty) {
          return Corrupt("the state in " + dir + " holds " + kData[i] +
                         " records but no format record; restore it from a backup");
        }
      }
    }
    StateFormat format{static_cast<uint32_t>(kStateFormatVersion), options.clock()};
    KMSFS_ASSIGN_OR_RETURN(std::string format_text, EncodeStateFormat(format));
    KMSFS_ASSIGN_OR_RETURN(Bytes verifier, SealVerifier(root_key));
    KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env->BeginWrite());
    KMSFS_RETURN_IF_ERROR(txn.Put(dbs.meta, kRootCheckKey, verifier));
    if (options.kdf_params) {
      KMSFS_ASSIGN_OR_RETURN(std::string kdf_text, EncodeKdfParams(*options.kdf_params));
      KMSFS_RETURN_IF_ERROR(txn.Put(dbs.meta, kKdfKey, kdf_text));
    }
    KMSFS_RETURN_IF_ERROR(txn.Put(dbs.meta, kFormatKey, format_text));
    KMSFS_RETURN_IF_ERROR(txn.Commit());
  }
  return std::unique_ptr<KeyStore>(
      new KeyStore(std::move(env), dbs, root_key.Clone(), std::move(options.clock)));
}

KeyStore::KeyStore(std::unique_ptr<Env> env, Dbs dbs, crypto::RootKey root,
                   std::function<int64_t()> clock)
    : env_(std::move(env)), dbs_(dbs), clock_(std::move(clock)), root_key_(std::move(root)) {}

KeyStore::~KeyStore() = default;

Status KeyStore::CommitWith(WriteTxn& txn, const TxnHook& also) const {
  if (also) KMSFS_RETURN_IF_ERROR(also(txn));
  return txn.Commit();
}

// ---- keys
// -----------------------------------------------------------------------------------------

Result<KeyRecord> KeyStore::CreateKey(std::string description, std::vector<KeyTag> tags,
                                      std::string policy, const TxnHook& also) {
  KeyRecord r;
  r.key_id = KeyIdFromRandom(crypto::RandomArray<16>());
  r.description = std::move(description);
  r.tags = std::move(tags);
  r.policy = std::move(policy);
  r.key_state = KeyState::kEnabled;
  r.creation_date = Now();
  r.primary_version = 1;
  KMSFS_RETURN_IF_ERROR(ValidateKeyRecord(r));
  const KeyVersion v{
      r.key_id, 1, r.creation_date, VersionState::kEnabled, RotationType::kInitial, std::nullopt};
  const crypto::MasterKey material = crypto::RandomKey<crypto::MasterKeyTag>();

  std::shared_lock<std::shared_mutex> root(root_mu_);
  KMSFS_ASSIGN_OR_RETURN(Bytes sealed, SealMaterial(root_key_, r.key_id, 1, material));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_RETURN_IF_ERROR(PutKey(txn, dbs_.keys, r, PutMode::kNoOverwrite));
  KMSFS_RETURN_IF_ERROR(PutVersion(txn, dbs_.versions, v, PutMode::kNoOverwrite));
  KMSFS_RETURN_IF_ERROR(
      txn.Put(dbs_.material, VersionKey(r.key_id, 1), sealed, PutMode::kNoOverwrite));
  KMSFS_RETURN_IF_ERROR(CommitWith(txn, also));
  return r;
}

Result<KeyRecord> KeyStore::GetKey(std::string_view key_id_or_alias) const {
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_->BeginRead());
  KMSFS_ASSIGN_OR_RETURN(std::string key_id, ResolveKeyId(txn, dbs_.aliases, key_id_or_alias));
  return ReadKey(txn, dbs_.keys, key_id);
}

Result<Page<KeyRecord>> KeyStore::ListKeys(size_t limit, std::string_view marker) const {
  KMSFS_RETURN_IF_ERROR(CheckLimit(limit));
  if (!marker.empty() && !IsValidKeyId(marker)) {
    return Error(Code::kInvalidArgument, "Marker is not one this store returned");
  }
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_->BeginRead());
  return ListPage<KeyRecord>(txn, dbs_.keys, limit, marker, DecodeKeyAt,
                             [](const KeyRecord&) { return true; });
}

Result<KeyRecord> KeyStore::UpdateKey(std::string_view key_id,
                                      const std::function<Status(KeyRecord&)>& mutate,
                                      const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(const KeyRecord before, ReadKey(txn, dbs_.keys, key_id));
  if (before.key_state == KeyState::kDestroyed) {
    return Precondition("key " + before.key_id + " is Destroyed");
  }
  KeyRecord after = before;
  KMSFS_RETURN_IF_ERROR(mutate(after));
  KMSFS_RETURN_IF_ERROR(ValidateKeyChange(before, after, /*primary_may_change=*/false));
  KMSFS_RETURN_IF_ERROR(PutKey(txn, dbs_.keys, after));
  KMSFS_RETURN_IF_ERROR(CommitWith(txn, also));
  return after;
}

Status KeyStore::DestroyKey(std::string_view key_id, const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, ReadKey(txn, dbs_.keys, key_id));
  if (key.key_state == KeyState::kDestroyed) return CommitWith(txn, also);  // idempotent
  const int64_t now = Now();
  if (key.key_state != KeyState::kPendingDeletion) {
    return Precondition("key " + key.key_id +
                        " is not PendingDeletion; schedule its deletion first");
  }
  if (*key.deletion_date > now) {
    return Precondition("key " + key.key_id + " is scheduled for deletion at " +
                        std::to_string(*key.deletion_date) + ", not yet");
  }
  KMSFS_ASSIGN_OR_RETURN(std::vector<KeyVersion> versions,
                         ScanVersions(txn, dbs_.versions, key_id));
  for (KeyVersion& v : versions) {
    Status s = txn.Delete(dbs_.material, VersionKey(v.key_id, v.version));
    if (!s.ok() && s.code() != Code::kNotFound) return s;
    if (v.state != VersionState::kDestroyed) {
      v.state = VersionState::kDestroyed;
      v.destruction_date = now;
      KMSFS_RETURN_IF_ERROR(PutVersion(txn, dbs_.versions, v));
    }
  }
  std::vector<std::string> aliases;
  ScanError err;
  KMSFS_RETURN_IF_ERROR(txn.Scan(dbs_.aliases, "", "", [&](std::string_view k, std::string_view v) {
    Result<AliasRecord> a = DecodeAliasAt(k, v);
    if (!a.ok()) return err.Stop(a.status());
    if (a->target_key_id == key_id) aliases.emplace_back(k);
    return true;
  }));
  KMSFS_RETURN_IF_ERROR(err.status);
  for (const std::string& a : aliases) KMSFS_RETURN_IF_ERROR(txn.Delete(dbs_.aliases, a));
  key.key_state = KeyState::kDestroyed;
  key.rotation_enabled = false;
  key.next_rotation_date.reset();
  KMSFS_RETURN_IF_ERROR(PutKey(txn, dbs_.keys, key));
  return CommitWith(txn, also);
}

Result<std::vector<std::string>> KeyStore::KeysDueForRotation(int64_t now) const {
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_->BeginRead());
  KMSFS_ASSIGN_OR_RETURN(std::vector<KeyRecord> due,
                         ScanKeys(txn, dbs_.keys, [now](const KeyRecord& k) {
                           return k.key_state == KeyState::kEnabled && k.rotation_enabled &&
                                  k.next_rotation_date && *k.next_rotation_date <= now;
                         }));
  std::vector<std::string> ids;
  for (KeyRecord& k : due) ids.push_back(std::move(k.key_id));
  return ids;
}

Result<std::vector<std::string>> KeyStore::KeysDueForDeletion(int64_t now) const {
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_->BeginRead());
  KMSFS_ASSIGN_OR_RETURN(std::vector<KeyRecord> due,
                         ScanKeys(txn, dbs_.keys, [now](const KeyRecord& k) {
                           return k.key_state == KeyState::kPendingDeletion && k.deletion_date &&
                                  *k.deletion_date <= now;
                         }));
  std::vector<std::string> ids;
  for (KeyRecord& k : due) ids.push_back(std::move(k.key_id));
  return ids;
}

// ---- versions and material
// ------------------------------------------------------------------------

Result<uint32_t> KeyStore::AddVersion(std::string_view key_id, RotationType type,
                                      const std::function<Status(KeyRecord&)>& update_key,
                                      const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  if (type != RotationType::kAutomatic && type != RotationType::kOnDemand) {
    return Error(Code::kInvalidArgument, "a new version is AUTOMATIC or ON_DEMAND");
  }
  const crypto::MasterKey material = crypto::RandomKey<crypto::MasterKeyTag>();
  std::shared_lock<std::shared_mutex> root(root_mu_);
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(const KeyRecord before, ReadKey(txn, dbs_.keys, key_id));
  if (before.key_state == KeyState::kPendingDeletion || before.key_state == KeyState::kDestroyed) {
    return Precondition("key " + before.key_id + " is " +
                        std::string(KeyStateName(before.key_state)) + "; it cannot be rotated");
  }
  if (before.primary_version == std::numeric_limits<uint32_t>::max()) {
    return Precondition("key " + before.key_id + " has no version numbers left");
  }
  const uint32_t version = before.primary_version + 1;
  KeyRecord after = before;
  after.primary_version = version;
  if (update_key) KMSFS_RETURN_IF_ERROR(update_key(after));
  KMSFS_RETURN_IF_ERROR(ValidateKeyChange(before, after, /*primary_may_change=*/true));
  if (after.primary_version != version) {
    return Error(Code::kInvalidArgument, "update_key may not change PrimaryVersion");
  }
  const KeyVersion v{after.key_id, version, Now(), VersionState::kEnabled, type, std::nullopt};
  KMSFS_ASSIGN_OR_RETURN(Bytes sealed, SealMaterial(root_key_, v.key_id, version, material));
  Status s = PutVersion(txn, dbs_.versions, v, PutMode::kNoOverwrite);
  if (!s.ok() && s.code() == Code::kAlreadyExists) {
    return Corrupt("key " + v.key_id + " has a version record beyond its primary version");
  }
  KMSFS_RETURN_IF_ERROR(s);
  KMSFS_RETURN_IF_ERROR(
      txn.Put(dbs_.material, VersionKey(v.key_id, version), sealed, PutMode::kNoOverwrite));
  KMSFS_RETURN_IF_ERROR(PutKey(txn, dbs_.keys, after));
  KMSFS_RETURN_IF_ERROR(CommitWith(txn, also));
  return version;
}

Result<crypto::MasterKey> KeyStore::GetVersionMaterial(std::string_view key_id,
                                                       uint32_t version) const {
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  std::shared_lock<std::shared_mutex> root(root_mu_);
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_->BeginRead());
  KMSFS_ASSIGN_OR_RETURN(KeyVersion v, ReadVersion(txn, dbs_.versions, key_id, version));
  KMSFS_RETURN_IF_ERROR(CheckServable(v));
  return ReadMaterial(txn, dbs_.material, root_key_, key_id, version);
}

Result<KeyMaterial> KeyStore::GetKeyMaterial(std::string_view key_id_or_alias,
                                             std::optional<uint32_t> version) const {
  std::shared_lock<std::shared_mutex> root(root_mu_);
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_->BeginRead());
  KMSFS_ASSIGN_OR_RETURN(std::string key_id, ResolveKeyId(txn, dbs_.aliases, key_id_or_alias));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, ReadKey(txn, dbs_.keys, key_id));
  const uint32_t want = version.value_or(key.primary_version);
  KMSFS_ASSIGN_OR_RETURN(KeyVersion v, ReadVersion(txn, dbs_.versions, key_id, want));
  KMSFS_RETURN_IF_ERROR(CheckServable(v));
  KMSFS_ASSIGN_OR_RETURN(crypto::MasterKey material,
                         ReadMaterial(txn, dbs_.material, root_key_, key_id, want));
  return KeyMaterial{std::move(key), want, std::move(material)};
}

Result<std::vector<KeyVersion>> KeyStore::ListVersions(std::string_view key_id) const {
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_->BeginRead());
  KMSFS_RETURN_IF_ERROR(ReadKey(txn, dbs_.keys, key_id).status());
  return ScanVersions(txn, dbs_.versions, key_id);
}

Status KeyStore::RetireVersion(std::string_view key_id, uint32_t version, const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, ReadKey(txn, dbs_.keys, key_id));
  KMSFS_ASSIGN_OR_RETURN(KeyVersion v, ReadVersion(txn, dbs_.versions, key_id, version));
  if (v.state == VersionState::kDestroyed) {
    return Precondition("key " + key.key_id + " version " + std::to_string(version) +
                        " is Destroyed");
  }
  if (version == key.primary_version) {
    return Precondition("version " + std::to_string(version) + " is the primary version of key " +
                        key.key_id + "; rotate the key before retiring it");
  }
  v.state = VersionState::kRetired;
  KMSFS_RETURN_IF_ERROR(PutVersion(txn, dbs_.versions, v));
  return CommitWith(txn, also);
}

Status KeyStore::DestroyVersion(std::string_view key_id, uint32_t version, const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(KeyVersion v, ReadVersion(txn, dbs_.versions, key_id, version));
  if (v.state == VersionState::kDestroyed) return CommitWith(txn, also);  // idempotent
  if (v.state != VersionState::kRetired) {
    return Precondition("key " + v.key_id + " version " + std::to_string(version) +
                        " is Enabled; retire it before destroying it");
  }
  if (v.destruction_date && *v.destruction_date > Now()) {
    return Precondition("key " + v.key_id + " version " + std::to_string(version) +
                        " is scheduled for destruction at " + std::to_string(*v.destruction_date) +
                        ", not yet");
  }
  Status s = txn.Delete(dbs_.material, VersionKey(key_id, version));
  if (!s.ok() && s.code() != Code::kNotFound) return s;
  v.state = VersionState::kDestroyed;
  v.destruction_date = Now();
  KMSFS_RETURN_IF_ERROR(PutVersion(txn, dbs_.versions, v));
  return CommitWith(txn, also);
}

Result<KeyVersion> KeyStore::ScheduleVersionDestruction(
    std::string_view key_id, uint32_t version, int64_t destruction_date,
    const std::function<Status(const KeyRecord&, const KeyVersion&)>& check, const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, ReadKey(txn, dbs_.keys, key_id));
  KMSFS_ASSIGN_OR_RETURN(KeyVersion v, ReadVersion(txn, dbs_.versions, key_id, version));
  if (check) KMSFS_RETURN_IF_ERROR(check(key, v));
  if (key.key_state == KeyState::kPendingDeletion || key.key_state == KeyState::kDestroyed) {
    return Precondition("key " + key.key_id + " is " + std::string(KeyStateName(key.key_state)));
  }
  if (version == key.primary_version) {
    return Precondition("version " + std::to_string(version) + " is the primary version of key " +
                        key.key_id + "; rotate the key before retiring it");
  }
  if (v.state != VersionState::kEnabled) {
    return Precondition("key " + key.key_id + " version " + std::to_string(version) + " is " +
                        std::string(VersionStateName(v.state)) + " already");
  }
  v.state = VersionState::kRetired;
  v.destruction_date = destruction_date;
  KMSFS_RETURN_IF_ERROR(PutVersion(txn, dbs_.versions, v));
  KMSFS_RETURN_IF_ERROR(CommitWith(txn, also));
  return v;
}

Result<KeyVersion> KeyStore::CancelVersionRetirement(
    std::string_view key_id, uint32_t version,
    const std::function<Status(const KeyRecord&, const KeyVersion&)>& check, const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, ReadKey(txn, dbs_.keys, key_id));
  KMSFS_ASSIGN_OR_RETURN(KeyVersion v, ReadVersion(txn, dbs_.versions, key_id, version));
  if (check) KMSFS_RETURN_IF_ERROR(check(key, v));
  if (v.state != VersionState::kRetired) {
    return Precondition("key " + key.key_id + " version " + std::to_string(version) + " is " +
                        std::string(VersionStateName(v.state)) + ", not Retired");
  }
  // The waiting period is the whole window for a cancel: once the destruction date has passed the
  // version is due, and whether the scheduler already ran must not decide whether it survives.
  if (v.destruction_date && *v.destruction_date <= Now()) {
    return Precondition("key " + key.key_id + " version " + std::to_string(version) +
                        " passed its destruction date; it is being destroyed and the retirement "
                        "can no longer be cancelled");
  }
  v.state = VersionState::kEnabled;
  v.destruction_date.reset();
  KMSFS_RETURN_IF_ERROR(PutVersion(txn, dbs_.versions, v));
  KMSFS_RETURN_IF_ERROR(CommitWith(txn, also));
  return v;
}

Result<std::vector<KeyVersion>> KeyStore::VersionsDueForDestruction(int64_t now) const {
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_->BeginRead());
  std::vector<KeyVersion> due;
  ScanError err;
  KMSFS_RETURN_IF_ERROR(
      txn.Scan(dbs_.versions, "", "", [&](std::string_view, std::string_view value) {
        Result<KeyVersion> v = DecodeKeyVersion(value);
        if (!v.ok()) return err.Stop(v.status());
        if (v->state == VersionState::kRetired && v->destruction_date &&
            *v->destruction_date <= now) {
          due.push_back(std::move(*v));
        }
        return true;
      }));
  KMSFS_RETURN_IF_ERROR(err.status);
  return due;
}

// ---- aliases
// --------------------------------------------------------------------------------------

Result<AliasRecord> KeyStore::CreateAlias(std::string_view alias, std::string_view key_id,
                                          const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(ValidateAliasName(alias));
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, ReadKey(txn, dbs_.keys, key_id));
  KMSFS_RETURN_IF_ERROR(CheckAliasTarget(key));
  const int64_t now = Now();
  const AliasRecord a{std::string(alias), key.key_id, now, now};
  KMSFS_ASSIGN_OR_RETURN(std::string text, EncodeAlias(a));
  Status s = txn.Put(dbs_.aliases, alias, text, PutMode::kNoOverwrite);
  if (!s.ok() && s.code() == Code::kAlreadyExists) {
    return Error(Code::kAlreadyExists, "alias " + a.alias_name + " already exists");
  }
  KMSFS_RETURN_IF_ERROR(s);
  KMSFS_RETURN_IF_ERROR(CommitWith(txn, also));
  return a;
}

Result<AliasRecord> KeyStore::UpdateAlias(std::string_view alias, std::string_view key_id,
                                          const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(ValidateAliasName(alias));
  KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(key_id));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  auto text = txn.Get(dbs_.aliases, alias);
  if (!text.ok()) {
    if (text.error().code() == Code::kNotFound) {
      return Error(Code::kNotFound, "alias " + std::string(alias) + " not found");
    }
    return text.error();
  }
  KMSFS_ASSIGN_OR_RETURN(AliasRecord a, DecodeAliasAt(alias, *text));
  KMSFS_ASSIGN_OR_RETURN(KeyRecord key, ReadKey(txn, dbs_.keys, key_id));
  KMSFS_RETURN_IF_ERROR(CheckAliasTarget(key));
  a.target_key_id = key.key_id;
  a.last_updated_date = Now();
  KMSFS_ASSIGN_OR_RETURN(std::string new_text, EncodeAlias(a));
  KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.aliases, alias, new_text));
  KMSFS_RETURN_IF_ERROR(CommitWith(txn, also));
  return a;
}

Status KeyStore::DeleteAlias(std::string_view alias, const TxnHook& also) {
  KMSFS_RETURN_IF_ERROR(ValidateAliasName(alias));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  Status s = txn.Delete(dbs_.aliases, alias);
  if (!s.ok() && s.code() == Code::kNotFound) {
    return Error(Code::kNotFound, "alias " + std::string(alias) + " not found");
  }
  KMSFS_RETURN_IF_ERROR(s);
  return CommitWith(txn, also);
}

Result<Page<AliasRecord>> KeyStore::ListAliases(std::optional<std::string> key_id, size_t limit,
                                                std::string_view marker) const {
  KMSFS_RETURN_IF_ERROR(CheckLimit(limit));
  if (key_id) KMSFS_RETURN_IF_ERROR(CheckKeyIdArg(*key_id));
  if (!marker.empty() && !ValidateAliasName(marker).ok()) {
    return Error(Code::kInvalidArgument, "Marker is not one this store returned");
  }
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_->BeginRead());
  return ListPage<AliasRecord>(
      txn, dbs_.aliases, limit, marker, DecodeAliasAt,
      [&](const AliasRecord& a) { return !key_id || a.target_key_id == *key_id; });
}

// ---- root key and backup
// --------------------------------------------------------------------------

Status KeyStore::ChangeRootKey(const crypto::RootKey& new_root, std::optional<KdfParams> kdf_params,
                               const TxnHook& also) {
  crypto::RootKey next = new_root.Clone();
  std::unique_lock<std::shared_mutex> root(root_mu_);  // no seal or unseal runs meanwhile
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  // Collect first: the sealed blobs are ciphertext, safe to copy; writing while a cursor walks
  // the same database is legal in LMDB but needlessly subtle.
  std::vector<std::pair<std::string, Bytes>> sealed_all;
  KMSFS_RETURN_IF_ERROR(
      txn.Scan(dbs_.material, "", "", [&](std::string_view k, std::string_view v) {
        const ByteSpan b = AsBytes(v);
        sealed_all.emplace_back(std::string(k), Bytes(b.begin(), b.end()));
        return true;
      }));
  for (const auto& [k, sealed] : sealed_all) {
    std::string key_id;
    uint32_t version = 0;
    if (!ParseVersionKey(k, &key_id, &version))
      return Corrupt("material record " + k + " has a bad key");
    KMSFS_ASSIGN_OR_RETURN(crypto::MasterKey material,
                           UnsealMaterial(root_key_, key_id, version, sealed));
    KMSFS_ASSIGN_OR_RETURN(Bytes resealed, SealMaterial(next, key_id, version, material));
    KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.material, k, resealed));
  }
  KMSFS_ASSIGN_OR_RETURN(Bytes verifier, SealVerifier(next));
  KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.meta, kRootCheckKey, verifier));
  if (Status s = txn.Delete(dbs_.meta, kRecoveryKey); !s.ok() && s.code() != Code::kNotFound) {
    return s;
  }
  if (kdf_params) {
    KMSFS_ASSIGN_OR_RETURN(std::string kdf_text, EncodeKdfParams(*kdf_params));
    KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.meta, kKdfKey, kdf_text));
  } else {
    Status s = txn.Delete(dbs_.meta, kKdfKey);
    if (!s.ok() && s.code() != Code::kNotFound) return s;
  }
  KMSFS_RETURN_IF_ERROR(CommitWith(txn, also));
  root_key_ = std::move(next);
  return Status::Ok();
}

Status KeyStore::SetRecoveryCode(const RecoveryCode& code, const TxnHook& also) {
  std::shared_lock<std::shared_mutex> root(root_mu_);
  KMSFS_ASSIGN_OR_RETURN(Bytes escrow, SealRootKeyEscrow(code, root_key_));
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_->BeginWrite());
  KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.meta, kRecoveryKey, escrow));
  return CommitWith(txn, also);
}

Result<crypto::RootKey> KeyStore::RecoverRootKey(Env& env, const RecoveryCode& code) {
  auto meta = env.OpenDb(kMetaDb, /*create=*/false);
  if (!meta.ok()) {
    if (meta.error().code() == Code::kNotFound) {
      return Error(Code::kNotFound, "the state in " + env.dir() + " is not initialized");
    }
    return meta.error();
  }
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env.BeginRead());
  auto escrow = txn.Get(*meta, kRecoveryKey);
  if (!escrow.ok()) {
    if (escrow.error().code() == Code::kNotFound) {
      return Error(Code::kNotFound,
                   "the state in " + env.dir() +
                       " holds no recovery escrow: no recovery code was made for it (or the "
                       "root key was changed after the code was made, before this backup)");
    }
    return escrow.error();
  }
  KMSFS_ASSIGN_OR_RETURN(crypto::RootKey root, OpenRootKeyEscrow(code, AsBytes(*escrow)));
  auto check = txn.Get(*meta, kRootCheckKey);
  if (!check.ok()) return Corrupt("the state in " + env.dir() + " has no root key verifier");
  KMSFS_RETURN_IF_ERROR(CheckVerifier(root, AsBytes(*check)));
  return root;
}

Status KeyStore::Backup(const std::string& path) const {
  // O_EXCL: never overwrite (an old backup, or a file someone planted); O_NOFOLLOW: never write
  // through a symlink.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == EEXIST) {
      return Error(Code::kAlreadyExists,
                   "backup file " + path + " exists; refusing to overwrite it", EEXIST);
    }
    return Error::FromErrno("create backup file " + path, errno);
  }
  auto fail = [&](Status s) {
    fd.Reset();
    ::unlink(path.c_str());  // no half-written backup that looks like a good one
    return s;
  };
  if (::fchmod(fd.get(), 0600) != 0) return fail(Error::FromErrno("chmod " + path, errno));
  Status s = env_->CopyTo(fd.get());
  if (!s.ok()) return fail(s);
  if (::close(fd.Release()) != 0) return fail(Error::FromErrno("close " + path, errno));
  std::string parent = std::filesystem::path(path).parent_path().string();
  return FsyncDir(parent.empty() ? "." : parent);
}

}  // namespace kmsfs::keyd
