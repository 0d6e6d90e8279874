#include "keyd/store/lmdb_env.h"

#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "common/base/unique_fd.h"

namespace kmsfs::keyd {
namespace {

// The one LMDB → Error mapping. MDB_NOTFOUND is an answer, not a failure; a full map is reported
// as ENOSPC so callers (and the fs errno boundary) treat it like a full disk.
Error LmdbError(int rc, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += ::mdb_strerror(rc);
  switch (rc) {
    case MDB_NOTFOUND:
      return Error(Code::kNotFound, std::move(msg));
    case MDB_KEYEXIST:
      return Error(Code::kAlreadyExists, std::move(msg));
    case MDB_MAP_FULL:
      return Error(Code::kIo, msg + " (keyd's state map is full; raise the map size)", ENOSPC);
    case MDB_READERS_FULL:
      return Error(Code::kUnavailable, std::move(msg));
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
      // The state file itself is damaged: that is what kCorrupt means (restore from a backup).
      return Error(Code::kCorrupt, std::move(msg));
    default:
      if (rc > 0) return Error(Code::kIo, std::move(msg), rc);  // an OS errno, kept as is
      return Error(Code::kInternal, std::move(msg));            // misuse: bad txn, dbi, size
  }
}

MDB_val ToVal(ByteSpan b) {
  return MDB_val{b.size(), const_cast<uint8_t*>(b.data())};  // LMDB never writes through it
}
MDB_val ToVal(std::string_view s) { return ToVal(AsBytes(s)); }
std::string_view ToView(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

std::string ModeString(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// LMDB forbids opening one environment twice in a process (closing either fd drops the fcntl
// locks of both), so we remember which directories are open.
std::mutex& OpenDirsMu() {
  static std::mutex mu;
  return mu;
}
std::set<std::pair<dev_t, ino_t>>& OpenDirs() {
  static std::set<std::pair<dev_t, ino_t>> dirs;
  return dirs;
}

struct CursorCloser {
  void operator()(MDB_cursor* c) const { ::mdb_cursor_close(c); }
};

// Creates `dir` 0700 if missing and checks that nobody but us (or root) can change what is in it.
Result<struct stat> CheckStateDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) {
    // mkdir applied the umask; make the mode exactly 0700 whatever the umask was.
    if (::chmod(dir.c_str(), 0700) != 0) return Error::FromErrno("chmod " + dir, errno);
  } else if (errno != EEXIST) {
    return Error::FromErrno("create state dir " + dir, errno);
  }
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return Error::FromErrno("open state dir " + dir, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::FromErrno("stat " + dir, errno);
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Error(Code::kPermissionDenied,
                 "state dir " + dir + " has mode " + ModeString(st.st_mode) +
                     ", which is group- or world-writable: others could replace keyd's state. "
                     "Fix: chmod 700 " +
                     dir);
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    return Error(Code::kPermissionDenied,
                 "state dir " + dir + " is owned by uid " + std::to_string(st.st_uid) +
                     ", not by this process (uid " + std::to_string(::geteuid()) +
                     ") or root. Fix: chown it to the user keyd runs as");
  }
  for (const char* name : {"data.mdb", "lock.mdb"}) {
    struct stat fst {};
    if (::fstatat(fd.get(), name, &fst, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      return Error::FromErrno("stat " + dir + "/" + name, errno);
    }
    const std::string path = dir + "/" + name;
    if (!S_ISREG(fst.st_mode)) {
      return Error(Code::kPermissionDenied,
                   path + " is not a regular file (a symlink?); refusing it");
    }
    if ((fst.st_mode & 077) != 0) {
      return Error(Code::kPermissionDenied,
                   path + " has mode " + ModeString(fst.st_mode) +
                       ", readable or writable by others (it holds sealed key material). "
                       "Fix: chmod 600 " +
                       path);
    }
  }
  return st;
}

}  // namespace

// ---- TxnBase ------------------------------------------------------------------------------------

TxnBase::TxnBase(TxnBase&& o) noexcept : txn_(std::exchange(o.txn_, nullptr)) {}

Result<std::string> TxnBase::Get(Db db, std::string_view key) const {
  if (txn_ == nullptr) return Error(Code::kInternal, "LMDB get: transaction has ended");
  MDB_val k = ToVal(key);
  MDB_val v{};
  const int rc = ::mdb_get(txn_, db.dbi, &k, &v);
  if (rc != 0) return LmdbError(rc, "LMDB get");
  return std::string(ToView(v));
}

Status TxnBase::View(Db db, std::string_view key, const std::function<Status(ByteSpan)>& fn) const {
  if (txn_ == nullptr) return Error(Code::kInternal, "LMDB get: transaction has ended");
  MDB_val k = ToVal(key);
  MDB_val v{};
  const int rc = ::mdb_get(txn_, db.dbi, &k, &v);
  if (rc != 0) return LmdbError(rc, "LMDB get");
  return fn(ByteSpan(static_cast<const uint8_t*>(v.mv_data), v.mv_size));
}

Status TxnBase::Scan(
    Db db, std::string_view prefix, std::string_view start_after,
    const std::function<bool(std::string_view key, std::string_view value)>& fn) const {
  if (txn_ == nullptr) return Error(Code::kInternal, "LMDB scan: transaction has ended");
  MDB_cursor* raw = nullptr;
  int rc = ::mdb_cursor_open(txn_, db.dbi, &raw);
  if (rc != 0) return LmdbError(rc, "LMDB cursor");
  // Read-only cursors outlive their txn unless closed; close it here, before we return.
  std::unique_ptr<MDB_cursor, CursorCloser> cursor(raw);

  // std::string_view compares as unsigned bytes, the same order as LMDB's default memcmp order.
  const std::string_view seek = start_after > prefix ? start_after : prefix;
  MDB_val k{};
  MDB_val v{};
  if (seek.empty()) {
    rc = ::mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
  } else {
    k = ToVal(seek);
    rc = ::mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
  }
  while (rc == 0) {
    const std::string_view key = ToView(k);
    if (key.substr(0, prefix.size()) != prefix) break;  // past the prefix range
    if (start_after.empty() || key != start_after) {
      if (!fn(key, ToView(v))) return Status::Ok();
    }
    rc = ::mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
  }
  if (rc != 0 && rc != MDB_NOTFOUND) return LmdbError(rc, "LMDB scan");
  return Status::Ok();
}

// ---- ReadTxn / WriteTxn -------------------------------------------------------------------------

ReadTxn::~ReadTxn() {
  if (txn_ != nullptr) ::mdb_txn_abort(txn_);  // how LMDB ends a reader: frees its slot
}

WriteTxn::WriteTxn(WriteTxn&& o) noexcept
    : TxnBase(std::move(o)), first_error_(std::move(o.first_error_)) {}

WriteTxn::~WriteTxn() {
  if (txn_ != nullptr) ::mdb_txn_abort(txn_);  // not committed: nothing of it reaches the disk
}

Status WriteTxn::Poison(Status s) {
  // kNotFound / kAlreadyExists are answers that leave the LMDB txn usable; anything else leaves
  // it in an error state, and we want Commit() to report the root cause (e.g. ENOSPC).
  if (!s.ok() && s.code() != Code::kNotFound && s.code() != Code::kAlreadyExists &&
      first_error_.ok()) {
    first_error_ = s;
  }
  return s;
}

Status WriteTxn::Put(Db db, std::string_view key, ByteSpan value, PutMode mode) {
  if (txn_ == nullptr) return Error(Code::kInternal, "LMDB put: transaction has ended");
  if (!first_error_.ok()) return first_error_;
  if (key.empty()) return Error(Code::kInvalidArgument, "LMDB put: empty key");
  MDB_val k = ToVal(key);
  MDB_val v = ToVal(value);
  const int rc =
      ::mdb_put(txn_, db.dbi, &k, &v, mode == PutMode::kNoOverwrite ? MDB_NOOVERWRITE : 0);
  if (rc != 0) return Poison(LmdbError(rc, "LMDB put"));
  return Status::Ok();
}

Status WriteTxn::Delete(Db db, std::string_view key) {
  if (txn_ == nullptr) return Error(Code::kInternal, "LMDB delete: transaction has ended");
  if (!first_error_.ok()) return first_error_;
  MDB_val k = ToVal(key);
  const int rc = ::mdb_del(txn_, db.dbi, &k, nullptr);
  if (rc != 0) return Poison(LmdbError(rc, "LMDB delete"));
  return Status::Ok();
}

Status WriteTxn::Commit() {
  if (txn_ == nullptr) return Error(Code::kInternal, "LMDB commit: transaction has ended");
  // Null the handle first (lmdbxx): mdb_txn_commit frees the txn on success and on failure, so
  // the destructor must never see it again.
  MDB_txn* txn = std::exchange(txn_, nullptr);
  if (!first_error_.ok()) {
    ::mdb_txn_abort(txn);
    return first_error_;
  }
  const int rc = ::mdb_txn_commit(txn);
  if (rc != 0) return LmdbError(rc, "LMDB commit");
  return Status::Ok();
}

// ---- Env ----------------------------------------------------------------------------------------

Result<std::unique_ptr<Env>> Env::Open(const std::string& dir, const Options& options) {
  KMSFS_ASSIGN_OR_RETURN(struct stat st, CheckStateDir(dir));
  {
    std::lock_guard<std::mutex> lock(OpenDirsMu());
    if (!OpenDirs().insert({st.st_dev, st.st_ino}).second) {
      return Error(Code::kFailedPrecondition,
                   "state dir " + dir + " is already open in this process");
    }
  }
  auto forget = [&] {
    std::lock_guard<std::mutex> lock(OpenDirsMu());
    OpenDirs().erase({st.st_dev, st.st_ino});
  };

  MDB_env* env = nullptr;
  int rc = ::mdb_env_create(&env);
  if (rc != 0) {
    forget();
    return LmdbError(rc, "LMDB env create");
  }
  if ((rc = ::mdb_env_set_mapsize(env, options.map_size)) != 0 ||
      (rc = ::mdb_env_set_maxdbs(env, options.max_dbs)) != 0 ||
      (rc = ::mdb_env_set_maxreaders(env, options.max_readers)) != 0 ||
      // MDB_NOTLS: reader slots follow ReadTxn objects, not threads (see the header). No
      // MDB_NOSYNC/MDB_NOMETASYNC: a commit is durable. No MDB_NOMEMINIT: LMDB zero-fills fresh
      // page buffers, so stale heap bytes (possibly secrets) are never written into data.mdb.
      (rc = ::mdb_env_open(env, dir.c_str(), MDB_NOTLS, 0600)) != 0) {
    ::mdb_env_close(env);
    forget();
    return LmdbError(rc, "LMDB open " + dir);
  }
  int dead = 0;
  ::mdb_reader_check(env, &dead);  // slots of a SIGKILLed keyd would pin old pages forever
  return std::unique_ptr<Env>(new Env(env, dir, st.st_dev, st.st_ino));
}

Env::~Env() {
  ::mdb_env_close(env_);
  std::lock_guard<std::mutex> lock(OpenDirsMu());
  OpenDirs().erase({dev_, ino_});
}

Result<ReadTxn> Env::BeginRead() const {
  MDB_txn* txn = nullptr;
  const int rc = ::mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn);
  if (rc != 0) return LmdbError(rc, "LMDB begin read");
  return ReadTxn(txn);
}

Result<WriteTxn> Env::BeginWrite() {
  MDB_txn* txn = nullptr;
  const int rc = ::mdb_txn_begin(env_, nullptr, 0, &txn);
  if (rc != 0) return LmdbError(rc, "LMDB begin write");
  return WriteTxn(txn);
}

Result<Db> Env::OpenDb(const std::string& name, bool create) {
  std::lock_guard<std::mutex> lock(dbi_mu_);
  if (auto it = dbis_.find(name); it != dbis_.end()) return it->second;
  MDB_txn* txn = nullptr;
  int rc = ::mdb_txn_begin(env_, nullptr, create ? 0 : MDB_RDONLY, &txn);
  if (rc != 0) return LmdbError(rc, "LMDB begin (open db " + name + ")");
  MDB_dbi dbi = 0;
  rc = ::mdb_dbi_open(txn, name.c_str(), create ? MDB_CREATE : 0, &dbi);
  if (rc != 0) {
    ::mdb_txn_abort(txn);
    return LmdbError(rc, "LMDB open db " + name);
  }
  // Committing (even a read-only txn) is what publishes the handle to the environment.
  rc = ::mdb_txn_commit(txn);
  if (rc != 0) return LmdbError(rc, "LMDB commit (open db " + name + ")");
  dbis_.emplace(name, Db{dbi});
  return Db{dbi};
}

void Env::ReleaseMappedPages() const {
  // LMDB does not say where it mapped the file (MDB_envinfo's address is only the fixed-map
  // hint), so find the mappings of data.mdb, by device and inode, in /proc/self/maps.
  mdb_filehandle_t fd;
  struct stat st {};
  if (::mdb_env_get_fd(env_, &fd) != 0 || ::fstat(fd, &st) != 0) return;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long start = 0, end = 0, offset = 0, inode = 0;
    unsigned major = 0, minor = 0;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &offset, &major,
                    &minor, &inode) == 7 &&
        inode == st.st_ino && makedev(major, minor) == st.st_dev && end > start) {
      ::madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
    }
  }
}

Status Env::CopyTo(int fd) const {
  const int rc = ::mdb_env_copyfd2(env_, fd, MDB_CP_COMPACT);
  if (rc != 0) return LmdbError(rc, "LMDB copy");
  if (::fsync(fd) != 0) return Error::FromErrno("fsync backup", errno);
  return Status::Ok();
}

}  // namespace kmsfs::keyd
