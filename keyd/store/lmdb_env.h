// Env, ReadTxn and WriteTxn: RAII over one LMDB environment, the only door to <lmdb.h>.
//
// Threading. The environment is opened with MDB_NOTLS, so a reader slot belongs to a ReadTxn
// object, not to a thread: a pool thread may hold several read transactions, and a ReadTxn may be
// handed to another thread (used by one thread at a time). Read transactions run concurrently with
// each other and with the single writer. A WriteTxn holds LMDB's writer lock (process-shared, so it
// also serializes writers in other processes) from BeginWrite() until Commit() or destruction; it
// is thread-affine: it must end on the thread that began it, and that thread must not begin a
// second WriteTxn meanwhile (self-deadlock).
//
// Durability. Default sync flags (no MDB_NOSYNC/MDB_NOMETASYNC/MDB_WRITEMAP): when Commit() returns
// OK the transaction is on disk (fdatasync), which keyd's fail-closed audit relies on. A crash at
// any instant leaves the last committed state (LMDB's copy-on-write B-tree + two meta pages).
//
// Lifetime. Values handed to callbacks (View, Scan) point into the memory map and are valid only
// during the callback: copy out what you keep; secrets go straight into crypto::SecretBytes.
// Every transaction must end before its Env is destroyed.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/base/bytes.h"
#include "common/base/status.h"

struct MDB_env;  // <lmdb.h> stays in lmdb_env.cc (scripts/check-deps.sh)
struct MDB_txn;

namespace kmsfs::keyd {

// A named database handle (an MDB_dbi), valid for the life of the Env that opened it.
struct Db {
  unsigned int dbi = 0;
};

class TxnBase {
 public:
  TxnBase(const TxnBase&) = delete;
  TxnBase& operator=(const TxnBase&) = delete;

  // Copies the value out. kNotFound if absent; kIo/kCorrupt/kInternal from LMDB.
  Result<std::string> Get(Db db, std::string_view key) const;
  // Calls `fn` with the value in place (zero-copy; valid only during the call) and returns what it
  // returns. Use it to decrypt sealed material straight into locked memory. kNotFound if absent.
  Status View(Db db, std::string_view key, const std::function<Status(ByteSpan)>& fn) const;
  // Visits, in key order, entries whose key starts with `prefix` and sorts strictly after
  // `start_after` (empty: from the first). `fn` returns false to stop. The views are valid only
  // during the call. Returns LMDB errors; an empty range is OK.
  Status Scan(Db db, std::string_view prefix, std::string_view start_after,
              const std::function<bool(std::string_view key, std::string_view value)>& fn) const;

 protected:
  explicit TxnBase(MDB_txn* txn) : txn_(txn) {}
  TxnBase(TxnBase&& o) noexcept;
  ~TxnBase() = default;
  MDB_txn* txn_ = nullptr;  // null once ended or moved from
};

// A read-only snapshot. It has no write methods: reading code cannot write by mistake (lmdb-safe).
// Ends (mdb_txn_abort, which is how LMDB releases a reader) on destruction.
class ReadTxn : public TxnBase {
 public:
  ReadTxn(ReadTxn&& o) noexcept = default;
  ReadTxn& operator=(ReadTxn&&) = delete;
  ~ReadTxn();

 private:
  friend class Env;
  explicit ReadTxn(MDB_txn* txn) : TxnBase(txn) {}
};

enum class PutMode { kUpsert, kNoOverwrite };  // kNoOverwrite: kAlreadyExists if the key exists

// The one write transaction. Aborts on destruction unless Commit() succeeded (lmdbxx). After any
// failed write the transaction is poisoned: later writes and Commit() return that first error.
class WriteTxn : public TxnBase {
 public:
  WriteTxn(WriteTxn&& o) noexcept;
  WriteTxn& operator=(WriteTxn&&) = delete;
  ~WriteTxn();

  Status Put(Db db, std::string_view key, ByteSpan value, PutMode mode = PutMode::kUpsert);
  Status Put(Db db, std::string_view key, std::string_view value, PutMode mode = PutMode::kUpsert) {
    return Put(db, key, AsBytes(value), mode);
  }
  // kNotFound if the key is absent (nothing else changes).
  Status Delete(Db db, std::string_view key);
  // Makes every change durable (fsync) or none. The handle is released first, so whatever the
  // outcome the transaction is over. MDB_MAP_FULL/ENOSPC come back as kIo with errno ENOSPC.
  Status Commit();
  bool active() const { return txn_ != nullptr; }

 private:
  friend class Env;
  explicit WriteTxn(MDB_txn* txn) : TxnBase(txn) {}
  Status Poison(Status s);
  Status first_error_;
};

// One LMDB environment (a state directory holding data.mdb and lock.mdb, both 0600).
// Thread-safe. Must outlive every transaction begun on it.
class Env {
 public:
  struct Options {
    size_t map_size = size_t{1} << 30;  // address space only; data.mdb grows as written
    unsigned max_dbs = 16;              // store uses 5; "audit", "audit_meta" and spares
    unsigned max_readers = 126;         // concurrent ReadTxns (one per in-flight request)
  };

  // Opens `dir`, creating it with mode 0700 if missing. Refuses (kPermissionDenied, message naming
  // the path, its mode and the fix) a dir that is not a directory, is group/world writable or is
  // owned by someone other than us or root, and existing data.mdb/lock.mdb that are not regular
  // files or are group/world accessible. kFailedPrecondition if this process already has `dir`
  // open (LMDB forbids two opens per process: closing one would drop the other's locks).
  // Clears reader slots left by dead processes. Writes nothing to data.mdb.
  static Result<std::unique_ptr<Env>> Open(const std::string& dir, const Options& options);
  static Result<std::unique_ptr<Env>> Open(const std::string& dir) { return Open(dir, Options{}); }
  ~Env();
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;

  // kUnavailable when all reader slots are taken (MDB_READERS_FULL).
  Result<ReadTxn> BeginRead() const;
  // Blocks until the writer lock is free. See the threading note above.
  Result<WriteTxn> BeginWrite();

  // The handle of the named database; with `create`, creates it (in its own committed write txn)
  // if missing, else kNotFound. Handles are cached. Call at startup, never while this thread holds
  // a WriteTxn (it may need the writer lock).
  Result<Db> OpenDb(const std::string& name, bool create);

  // A consistent online copy of the whole environment (one read snapshot), compacted (free pages,
  // which may hold superseded sealed material, are omitted), into `fd`, which is fsync'ed.
  Status CopyTo(int fd) const;

  // Drops this process's page-table entries for LMDB's read-only map of data.mdb
  // (madvise MADV_DONTNEED). Why: every page a transaction reads through the map stays mapped, so
  // an append-only database (the audit trail) makes the resident set grow with the file. The map
  // is a shared file mapping: the data stays in the page cache (or on tmpfs) and the next access
  // simply faults it back, so this is safe at any time, with transactions running. Best effort.
  void ReleaseMappedPages() const;

  const std::string& dir() const { return dir_; }

 private:
  Env(MDB_env* env, std::string dir, dev_t dev, ino_t ino)
      : env_(env), dir_(std::move(dir)), dev_(dev), ino_(ino) {}
  MDB_env* env_;
  std::string dir_;
  dev_t dev_;
  ino_t ino_;
  std::mutex dbi_mu_;  // mdb_dbi_open must not run in two transactions at once
  std::unordered_map<std::string, Db> dbis_;  // GUARDED_BY(dbi_mu_)
};

}  // namespace kmsfs::keyd
