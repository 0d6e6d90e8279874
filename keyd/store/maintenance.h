// State-directory maintenance for kmsfs-keyd's offline commands (change-root-key, recovery-code,
// restore): an exclusive lock that keeps them and a serving keyd apart, and the installation of
// a backup as a state directory. Procedures and reasons: docs/lifecycle.md.
//
// Why a lock: LMDB lets several processes open one state, but a serving keyd caches the root key;
// if an offline command re-sealed the state under a new root key while keyd ran, keyd would go on
// sealing new versions under the old one and the state would mix two root keys. keyd holds the
// lock (flock on DIR/keyd.lock) for as long as it serves; the offline commands take it too, and
// whoever comes second is refused at once. flock dies with its process (a SIGKILLed keyd leaves
// no stale lock).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/base/status.h"
#include "common/base/unique_fd.h"
#include "keyd/store/key_store.h"

namespace kmsfs::keyd {

inline constexpr char kStateLockName[] = "keyd.lock";

// Creates `dir` (0700) if missing and takes DIR/keyd.lock exclusively, without waiting. The lock
// lasts as long as the returned fd is open. kFailedPrecondition "... is in use by another
// kmsfs-keyd ..." if someone holds it; kIo/kPermissionDenied for the file system.
Result<UniqueFd> LockStateDir(const std::string& dir);

// Installs the backup file `backup` (a `kmsctl backup` copy, i.e. a compacted data.mdb) as the
// state of `dir`, which must not hold a state yet (no data.mdb: nothing is ever overwritten;
// move an old state away first). The caller must hold LockStateDir(dir).
//
// The backup is copied to DIR/restore.tmp/ first and opened there by `open` — which must check
// the root key (or recover it) and may re-seal the state, returning the opened store — then the
// store is closed and its data.mdb is renamed into place (atomic; the directory is fsync'ed).
// A failure at any step leaves `dir` without a state and the backup file untouched.
// kAlreadyExists if `dir` already holds data.mdb; errors of `open` as they are.
using OpenStagedState =
    std::function<Result<std::unique_ptr<KeyStore>>(std::unique_ptr<Env> staged)>;
Status InstallBackup(const std::string& backup, const std::string& dir,
                     const OpenStagedState& open);

// Rewrites DIR/data.mdb as a compacted copy of itself: LMDB does not wipe freed pages, so after a
// re-seal (ChangeRootKey) or a destruction they may still hold material sealed under the old root
// key. The copy (LMDB's compacting copy, which omits free pages) goes to DIR/compact.tmp, is
// fsync'ed and renamed over data.mdb, and the directory is fsync'ed. The caller must hold
// LockStateDir(dir) and have no Env open on `dir` (the rename must not pull the file from under
// an open map). On failure data.mdb is unchanged (still valid, not compacted).
Status CompactStateDir(const std::string& dir);

}  // namespace kmsfs::keyd
