#include "keyd/audit/audit_trail.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "common/base/check.h"
#include "common/base/scope_exit.h"
#include "common/base/signals_blocked.h"
#include "common/base/unique_fd.h"
#include "common/log/log.h"
#include "keyd/audit/journal_emitter.h"

namespace kmsfs::keyd {
namespace {

constexpr char kRecordsDb[] = "audit";
constexpr char kMetaDb[] = "audit_meta";
constexpr char kFormatKey[] = "format";
constexpr char kHeadKey[] = "head";
constexpr char kAnchorKey[] = "anchor";
constexpr char kCheckpointPrefix[] = "checkpoint/";
constexpr char kInterimCounterKey[] = "next_sequence";  // the interim SimpleAuditSink's layout
constexpr int kFormatVersion = 1;
constexpr size_t kMaxLimit = 10000;
constexpr size_t kScanBudget = 100000;

int64_t SystemClockUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<spdlog::logger> Log() { return log::Get("keyd.audit"); }

std::string CheckpointKey(uint64_t sequence) { return kCheckpointPrefix + SequenceKey(sequence); }

// A stored position (head, anchor, checkpoint); nullopt when absent.
Result<std::optional<Checkpoint>> ReadPosition(const TxnBase& txn, Db meta, std::string_view key) {
  auto text = txn.Get(meta, key);
  if (!text.ok()) {
    if (text.error().code() == Code::kNotFound) return std::optional<Checkpoint>();
    return text.error();
  }
  auto c = DecodeCheckpoint(*text);
  if (!c.ok()) {
    return Error(Code::kCorrupt, "audit_meta " + std::string(key) + ": " + c.error().message());
  }
  return std::optional<Checkpoint>(*c);
}

// The chain position new records follow: the head, else the anchor (all records pruned, head
// lost), else the genesis (0, zeros).
Result<Checkpoint> ReadHeadIn(const TxnBase& txn, Db meta) {
  KMSFS_ASSIGN_OR_RETURN(std::optional<Checkpoint> head, ReadPosition(txn, meta, kHeadKey));
  if (head) return *head;
  KMSFS_ASSIGN_OR_RETURN(std::optional<Checkpoint> anchor, ReadPosition(txn, meta, kAnchorKey));
  if (anchor) return *anchor;
  return Checkpoint{};
}

Result<std::vector<Checkpoint>> ReadCheckpoints(const TxnBase& txn, Db meta) {
  std::vector<Checkpoint> out;
  Status err;
  KMSFS_RETURN_IF_ERROR(
      txn.Scan(meta, kCheckpointPrefix, "", [&](std::string_view, std::string_view v) {
        auto c = DecodeCheckpoint(v);
        if (!c.ok()) {
          err = Error(Code::kCorrupt, "audit_meta checkpoint: " + c.error().message());
          return false;
        }
        out.push_back(*c);
        return true;
      }));
  KMSFS_RETURN_IF_ERROR(err);
  return out;
}

bool PathMatches(const std::string& path, const std::string& prefix) {
  if (prefix.empty() || path == prefix) return true;
  if (path.compare(0, prefix.size(), prefix) != 0) return false;
  return prefix.back() == '/' || path[prefix.size()] == '/';
}

bool Matches(const AuditRecord& r, const AuditFilter& f) {
  if (f.from_time_us && r.time_us < *f.from_time_us) return false;
  if (f.to_time_us && r.time_us >= *f.to_time_us) return false;
  if (f.key_id && r.key_id != *f.key_id) return false;
  if (f.uid && static_cast<uint32_t>(r.principal.uid) != *f.uid) return false;
  if (f.path_prefix && !PathMatches(r.path, *f.path_prefix)) return false;
  if (f.operation && r.operation != *f.operation) return false;
  if (f.outcome && r.outcome != *f.outcome) return false;
  return true;
}

// Whether a record is too long for a WAL frame (ParseWalFrames would stop at it).
template <typename Records>
bool HasOversized(const Records& records) {
  return std::any_of(records.begin(), records.end(),
                     [](const auto& r) { return r.text.size() > kWalMaxText; });
}

// Writes `data` to `fd` completely; kIo with errno.
Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("write " + path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Result<UniqueFd> CreateNewFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == EEXIST) return Error(Code::kAlreadyExists, path + " already exists", EEXIST);
    return Error::FromErrno("create " + path, errno);
  }
  return fd;
}

// fsyncs the file and its directory entry, so the export survives a crash once we say OK.
Status SyncNewFile(int fd, const std::string& path) {
  if (::fsync(fd) != 0) return Error::FromErrno("fsync " + path, errno);
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd) return Error::FromErrno("open " + dir, errno);
  if (::fsync(dfd.get()) != 0) return Error::FromErrno("fsync " + dir, errno);
  return Status::Ok();
}

}  // namespace

// One queued Append. Lives on the appending thread's stack until it returns. Whoever commits
// it reads `body` while the writer waits, writes `status` and then publishes it with `state`;
// after that store it touches nothing of the writer but the futex word's address (Release).
// An AppendAsync writer lives on the heap instead, and has `done`: the commit calls it and deletes
// the writer.
struct AuditTrail::Writer {
  std::string body;
  Status status;
  std::atomic<uint32_t> state{0};  // 0 while waiting, 1 once `status` is final
  std::function<void(Status)> done;  // AppendAsync only
};

namespace {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

// A waiting writer sleeps on its own state word, not on queue_mu_: woken through a condition
// variable under that mutex, each writer of a batch would first wait for the committer to let go
// of it again.
void WaitForCommit(std::atomic<uint32_t>& state) {
  while (state.load(std::memory_order_acquire) == 0) {
    ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&state), FUTEX_WAIT_PRIVATE, 0, nullptr,
              nullptr, 0);  // returns at once if the word is no longer 0; EINTR: look again
  }
}

// Publishes the writer's status and wakes it. The writer may return (and its stack frame go) as
// soon as the store is visible, so only the word's address is used after it: FUTEX_WAKE on an
// address nobody waits on is harmless (at worst a spurious wake-up of a later waiter there, which
// every futex waiter tolerates).
void Release(std::atomic<uint32_t>& state) {
  uint32_t* const word = reinterpret_cast<uint32_t*>(&state);
  state.store(1, std::memory_order_release);
  ::syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

}  // namespace

AuditTrail::AuditTrail(Env& env, Dbs dbs, Options options)
    : env_(env), dbs_(dbs), options_(std::move(options)) {}

AuditTrail::~AuditTrail() {
  {
    std::lock_guard lock(queue_mu_);
    stop_committer_ = true;
  }
  committer_cv_.notify_all();
  // It commits what is queued first (AppendAsync records may still be queued when the server
  // gave up waiting for them), and notifies the journal thread after each commit: before that.
  if (committer_.joinable()) committer_.join();
  journal_.reset();  // its thread reads through us: stop it before anything else goes
  if (!wal_.valid()) return;
  Status s = Flush();
  if (!s.ok()) {
    Log()->error(
        "audit records could not be moved from {} into the trail at shutdown: {}; they stay "
        "durable there and are ingested at the next start",
        wal_.path(), s.ToString());
  }
}

Result<std::unique_ptr<AuditTrail>> AuditTrail::Open(Env& env, Options options) {
  if (!options.clock_us) options.clock_us = SystemClockUs;
  if (options.max_batch == 0) options.max_batch = 1;
  KMSFS_ASSIGN_OR_RETURN(Db records, env.OpenDb(kRecordsDb, /*create=*/true));
  KMSFS_ASSIGN_OR_RETURN(Db meta, env.OpenDb(kMetaDb, /*create=*/true));
  {
    KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env.BeginWrite());
    auto format = txn.Get(meta, kFormatKey);
    if (format.ok()) {
      const auto j = nlohmann::json::parse(*format, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("Format") || j["Format"] != kFormatVersion) {
        return Error(Code::kFailedPrecondition,
                     "audit trail format " + *format + " is not one this keyd reads (" +
                         std::to_string(kFormatVersion) + "); use the keyd that wrote it");
      }
    } else if (format.error().code() != Code::kNotFound) {
      return format.error();
    } else {
      // A fresh trail — unless someone else's records are already there.
      bool foreign = txn.Get(meta, kInterimCounterKey).ok();
      KMSFS_RETURN_IF_ERROR(txn.Scan(records, "", "", [&](std::string_view k, std::string_view) {
        uint64_t ignored;
        foreign = foreign || !ParseSequenceKey(k, &ignored);
        return false;  // the first key decides
      }));
      if (foreign) {
        return Error(Code::kFailedPrecondition,
                     "the audit database holds records in another layout (the interim "
                     "unchained sink's?); export them and start from an empty audit trail");
      }
      KMSFS_RETURN_IF_ERROR(
          txn.Put(meta, kFormatKey, "{\"Format\":" + std::to_string(kFormatVersion) + "}"));
      KMSFS_RETURN_IF_ERROR(txn.Commit());
    }
  }
#ifdef KMSFS_BENCH_DISCARD_AUDIT
  Log()->critical(
      "THIS IS A BENCHMARK BUILD THAT DISCARDS KEY-USE AUDIT RECORDS (kmsfs-keyd-noaudit-bench); "
      "never use it for real keys");
#endif
  const Journal journal = options.journal;
  std::unique_ptr<AuditTrail> trail(new AuditTrail(env, Dbs{records, meta}, std::move(options)));
  KMSFS_RETURN_IF_ERROR(trail->OpenWal());
#ifdef KMSFS_BENCH_DISCARD_AUDIT
  {
    // The gap must be visible in the trail itself, not only in a log line: a chained record, by
    // the real write path, before any request is served. Failing to write it fails Open (keyd
    // does not start), as any audit failure would.
    AuditRecord r;
    r.operation = "AuditDisabled";
    r.principal.uid = ::getuid();
    r.principal.gid = ::getgid();
    r.principal.pid = ::getpid();
    r.principal.unit = "kmsfs-keyd-noaudit-bench";
    r.outcome = "Success";
    r.detail =
        "benchmark build kmsfs-keyd-noaudit-bench (pid " + std::to_string(::getpid()) +
        ") started: key-use records (Decrypt, GenerateDataKey, ...) of this process are "
        "DISCARDED, not written; records after this one until the next keyd start are incomplete";
    KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env.BeginWrite());
    KMSFS_RETURN_IF_ERROR(trail->AppendInTxn(txn, std::move(r)));
    KMSFS_RETURN_IF_ERROR(txn.Commit());
  }
#endif
  const bool journal_on = journal == Journal::kOn ||
                          (journal == Journal::kAuto && log::DetectSink() == log::Sink::kJournal);
  if (journal_on) {
    KMSFS_ASSIGN_OR_RETURN(Checkpoint head, trail->Head());
    AuditTrail* t = trail.get();
    trail->journal_ = std::make_unique<JournalEmitter>(
        [t](uint64_t after, size_t limit) -> Result<std::vector<TrailRecord>> {
          KMSFS_ASSIGN_OR_RETURN(AuditPage page, t->Tail(after, limit));
          return std::move(page.records);
        },
        head.sequence);
  }
  return trail;
}

// ---- writing ------------------------------------------------------------------------------------

// The head as `txn` sees it. Decoding the head's JSON in every commit showed up at ~2 % of keyd's
// CPU at 8 clients, so the last decoded text is remembered: this is a cache of the pure function
// DecodeCheckpoint(text), keyed by the exact stored bytes — the head is still read from the
// transaction every time, and any other text (a rolled-back or edited head, a commit that
// aborted after the cache was filled) is decoded afresh.
Result<Checkpoint> AuditTrail::ReadHeadForWrite(WriteTxn& txn) {
  auto text = txn.Get(dbs_.meta, kHeadKey);
  if (!text.ok()) return ReadHeadIn(txn, dbs_.meta);  // absent (anchor, genesis) or an error
  {
    std::lock_guard lock(head_memo_mu_);
    if (head_memo_text_ == *text) return head_memo_;
  }
  KMSFS_ASSIGN_OR_RETURN(Checkpoint head, ReadHeadIn(txn, dbs_.meta));
  RememberHead(std::move(*text), head);
  return head;
}

void AuditTrail::RememberHead(std::string text, const Checkpoint& head) {
  std::lock_guard lock(head_memo_mu_);
  head_memo_text_ = std::move(text);
  head_memo_ = head;
}

std::vector<AuditTrail::Pending> AuditTrail::Compose(
    const Checkpoint& base, const std::vector<const std::string*>& bodies) const {
  std::vector<Pending> out;
  out.reserve(bodies.size());
  uint64_t seq = base.sequence;
  crypto::Sha256Digest prev = base.hash;
  for (const std::string* body : bodies) {
    Pending p;
    p.sequence = ++seq;
    p.time_us = options_.clock_us();
    p.prev_hash = prev;
    p.text = ComposeRecord(p.sequence, p.time_us, *body, prev, &p.hash);
    prev = p.hash;
    out.push_back(std::move(p));
  }
  return out;
}

Status AuditTrail::PutComposed(WriteTxn& txn, const std::vector<const Pending*>& records) {
  if (records.empty()) return Status::Ok();
  const uint64_t every = options_.checkpoint_every;
  for (const Pending* r : records) {
    Status s = txn.Put(dbs_.records, SequenceKey(r->sequence), r->text, PutMode::kNoOverwrite);
    if (!s.ok()) {
      if (s.code() != Code::kAlreadyExists) return s;
      // Refusing beats overwriting evidence: someone rolled the head back.
      return Error(Code::kCorrupt, "audit record " + std::to_string(r->sequence) +
                                       " already exists although the head says " +
                                       std::to_string(r->sequence - 1) +
                                       ": the trail was tampered with (kmsctl audit verify)");
    }
    // At each multiple exactly, so where checkpoints fall does not depend on how records were
    // grouped into commits and ingests.
    if (every > 0 && r->sequence % every == 0) {
      KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.meta, CheckpointKey(r->sequence),
                                    EncodeCheckpoint({r->sequence, r->hash, r->time_us})));
    }
  }
  const Pending& last = *records.back();
  const Checkpoint head{last.sequence, last.hash, last.time_us};
  std::string head_text = EncodeCheckpoint(head);
  KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.meta, kHeadKey, head_text));
  RememberHead(std::move(head_text), head);
  return Status::Ok();
}

Status AuditTrail::WriteRecords(WriteTxn& txn, const std::vector<const std::string*>& bodies) {
  KMSFS_ASSIGN_OR_RETURN(Checkpoint head, ReadHeadForWrite(txn));
  const std::vector<Pending> records = Compose(head, bodies);
  std::vector<const Pending*> ptrs;
  for (const Pending& r : records) ptrs.push_back(&r);
  return PutComposed(txn, ptrs);
}

// ---- the write-ahead file -----------------------------------------------------------------------

Status AuditTrail::OpenWal() {
  // Without a WAL (wal_bytes 0), one left by an earlier run is still replayed, then removed.
  const bool use = options_.wal_bytes > 0;
  bool created = false;
  auto file = WalFile::Open(env_.dir(), /*create=*/use, &created);
  if (file.ok()) file->set_fault_for_test(options_.wal_fault_for_test);
  if (!file.ok()) {
    if (!use && file.error().code() == Code::kNotFound) return Status::Ok();
    // An unsafe or unreadable existing file: refuse to start (it may hold records).
    if (file.error().code() != Code::kIo) return file.error();
    Log()->warn(
        "audit write-ahead file unavailable ({}); every group commit is an LMDB transaction "
        "(slower, equally durable) until keyd restarts",
        file.error().ToString());
    return Status::Ok();
  }
  // Replay: records durable in the WAL that did not reach LMDB before keyd stopped.
  KMSFS_ASSIGN_OR_RETURN(std::string bytes, file->ReadAll());
  std::vector<WalFrame> frames = ParseWalFrames(bytes);
  std::string().swap(bytes);
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_.BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(Checkpoint head, ReadHeadIn(txn, dbs_.meta));
  std::vector<Pending> kept;
  uint64_t frame_end = 0, kept_end = 0;  // where frame f ends in the file; the last kept one's
  for (WalFrame& f : frames) {
    frame_end += kWalFrameOverhead + f.text.size();
    if (f.sequence <= head.sequence) continue;  // ingested before
    const Checkpoint base =
        kept.empty() ? head : Checkpoint{kept.back().sequence, kept.back().hash, 0};
    auto t = DecodeTrailRecord(f.text);
    const auto canonical = CanonicalBytes(f.text);
    if (!t.ok() || !canonical || t->record.sequence != f.sequence) {
      return Error(Code::kCorrupt,
                   file->path() + ": the frame of record " + std::to_string(f.sequence) +
                       " is intact but holds no valid record (altered). Keep a copy of the file "
                       "for review and move it out of " +
                       env_.dir() + " to start keyd");
    }
    if (f.sequence != base.sequence + 1 || t->prev_hash != base.hash) {
      if (!kept.empty()) break;  // a stale frame after the last written one: the log ends here
      return Error(Code::kCorrupt,
                   file->path() + " holds valid audit records from " + std::to_string(f.sequence) +
                       " that do not continue the trail in data.mdb (which ends at record " +
                       std::to_string(head.sequence) +
                       "): the file belongs to another history (an older data.mdb put back, or "
                       "a WAL copied in). Keep a copy of it for review (its records are not in "
                       "the trail), then move it out of " +
                       env_.dir() + " to start keyd");
    }
    Pending p;
    p.sequence = f.sequence;
    p.time_us = t->record.time_us;
    p.prev_hash = base.hash;
    p.hash = ChainHash(base.hash, *canonical);  // recomputed: the frame is not trusted
    if (p.hash != t->hash) {
      return Error(Code::kCorrupt, file->path() + ": record " + std::to_string(f.sequence) +
                                       " does not hash to its Hash (altered). Keep a copy of the "
                                       "file for review and move it out of " +
                                       env_.dir() + " to start keyd");
    }
    p.text = std::move(f.text);
    kept.push_back(std::move(p));
    kept_end = frame_end;
  }
  if (!kept.empty()) {
    std::vector<const Pending*> ptrs;
    for (const Pending& p : kept) ptrs.push_back(&p);
    Status s = PutComposed(txn, ptrs);
    if (s.ok()) s = txn.Commit();
    if (!s.ok()) {
      if (s.code() != Code::kIo) return s;
      // A full (or failing) disk. The records are durable in the file, so keyd can start with
      // them pending, fail closed as it would at runtime: every batch is refused until an ingest
      // succeeds (CommitBatch retries it first), and readers see them meanwhile.
      return KeepPendingAtOpen(std::move(*file), std::move(kept), kept_end, s);
    }
    head = Checkpoint{kept.back().sequence, kept.back().hash, kept.back().time_us};
    Log()->info("audit trail: {} record(s) ({}..{}) replayed from {}", kept.size(),
                kept.front().sequence, kept.back().sequence, file->path());
  }
  // Everything in the file is in LMDB now: it is "empty" (the next frames go to offset 0).
  if (!use) {
    if (::unlink(file->path().c_str()) != 0)
      return Error::FromErrno("remove " + file->path(), errno);
    return Status::Ok();
  }
  Status s = file->Preallocate(options_.wal_bytes, created);
  if (!s.ok()) {
    Log()->warn(
        "audit write-ahead file {} could not be preallocated ({}); every group commit is an "
        "LMDB transaction (slower, equally durable) until keyd restarts",
        file->path(), s.ToString());
    ::unlink(file->path().c_str());  // holds nothing that is not in LMDB
    return Status::Ok();
  }
  std::lock_guard lock(wal_mu_);
  wal_head_ = head;
  wal_offset_ = 0;
  wal_ = std::move(*file);
  return Status::Ok();
}

Status AuditTrail::KeepPendingAtOpen(WalFile file, std::vector<Pending> kept, uint64_t end,
                                     const Status& ingest_error) {
  // New frames go after the kept ones. Never shrink the file below them (a smaller wal_bytes
  // than the last run's); with wal_bytes 0 the file is used as it is until the next Open.
  const uint64_t want = options_.wal_bytes > 0 ? std::max(options_.wal_bytes, end) : file.size();
  if (want > file.size()) {
    Status grown = file.Preallocate(want, /*sync_dir=*/false);
    if (!grown.ok()) {
      // Growing failed: only what the file held before is certain, and its records are still
      // there (Preallocate only appends). Without room for new frames, refuse to start.
      return Error(Code::kIo,
                   "audit records pending in " + file.path() + " could not be moved into " +
                       "data.mdb (" + ingest_error.ToString() + ") and the file could not be " +
                       "grown to " + std::to_string(want) + " bytes (" + grown.ToString() +
                       "); free disk space and start keyd again",
                   ingest_error.error().sys_errno());
    }
  }
  Log()->critical(
      "audit trail: {} record(s) ({}..{}) pending in {} could not be moved into data.mdb at "
      "start: {}. keyd runs, but refuses every audited request until that succeeds (free disk "
      "space); the records stay durable in the file",
      kept.size(), kept.front().sequence, kept.back().sequence, file.path(),
      ingest_error.ToString());
  failed_ingests_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard fail_lock(fail_mu_);
    ++failures_since_ok_;  // the first successful commit then logs "recovered"
  }
  std::lock_guard lock(wal_mu_);
  wal_head_ = Checkpoint{kept.back().sequence, kept.back().hash, kept.back().time_us};
  pending_.assign(std::make_move_iterator(kept.begin()), std::make_move_iterator(kept.end()));
  wal_offset_ = end;
  ingest_failed_ = true;
  wal_ = std::move(file);
  return Status::Ok();
}

Status AuditTrail::Reconcile(const Checkpoint& lmdb) {
  std::lock_guard lock(wal_mu_);
  if (lmdb.sequence > wal_head_.sequence) {
    // An AppendInTxn transaction committed: it held every pending record and its own.
    wal_head_ = lmdb;
    pending_.clear();
    ingest_failed_ = false;
    return Status::Ok();
  }
  while (!pending_.empty() && pending_.front().sequence <= lmdb.sequence) pending_.pop_front();
  const bool consistent = pending_.empty()
                              ? lmdb.sequence == wal_head_.sequence && lmdb.hash == wal_head_.hash
                              : pending_.front().sequence == lmdb.sequence + 1 &&
                                    pending_.front().prev_hash == lmdb.hash;
  if (consistent) return Status::Ok();
  return Error(Code::kCorrupt, "the audit head in audit_meta (record " +
                                   std::to_string(lmdb.sequence) +
                                   ") does not match the records this keyd made durable (up to " +
                                   std::to_string(wal_head_.sequence) +
                                   "): it was rolled back or altered; nothing is written "
                                   "(kmsctl audit verify)");
}

Status AuditTrail::IngestAndCommit(WriteTxn txn) {
  std::vector<const Pending*> ptrs;
  for (const Pending& p : pending_) ptrs.push_back(&p);
  Status s = PutComposed(txn, ptrs);
  if (s.ok()) s = txn.Commit();  // fsync; on failure LMDB dropped the whole ingest
  if (!s.ok()) {
    ingest_failed_ = true;
    failed_ingests_.fetch_add(1, std::memory_order_relaxed);
    return s;
  }
  {
    std::lock_guard lock(wal_mu_);
    pending_.clear();
    wal_offset_ = 0;
    ingest_failed_ = false;
  }
  ingests_.fetch_add(1, std::memory_order_relaxed);
  NoteIngested(ptrs.size());
  return Status::Ok();
}

void AuditTrail::NoteIngested(size_t records) {
  const uint64_t before = ingested_.fetch_add(records, std::memory_order_relaxed);
  const uint64_t every = options_.release_map_every;
  if (every > 0 && before / every != (before + records) / every) env_.ReleaseMappedPages();
}

Status AuditTrail::CommitDirect(WriteTxn txn, std::vector<Pending> records) {
  std::vector<const Pending*> ptrs;
  for (const Pending& p : pending_) ptrs.push_back(&p);
  for (const Pending& p : records) ptrs.push_back(&p);
  KMSFS_RETURN_IF_ERROR(PutComposed(txn, ptrs));
  KMSFS_RETURN_IF_ERROR(txn.Commit());
  {
    std::lock_guard lock(wal_mu_);
    wal_head_ = Checkpoint{records.back().sequence, records.back().hash, records.back().time_us};
    pending_.clear();
    wal_offset_ = 0;
    ingest_failed_ = false;
  }
  NoteIngested(ptrs.size());
  return Status::Ok();
}

Status AuditTrail::CommitBatch(const std::vector<Writer*>& batch) {
  try {
    std::vector<const std::string*> bodies;
    bodies.reserve(batch.size());
    for (const Writer* w : batch) bodies.push_back(&w->body);
    std::optional<WriteTxn> txn;
    {
      // Held for the whole step, also when only the WAL is written: LMDB's writer lock is the
      // chain lock (AppendInTxn and ingests wait for it). Aborted unless it ingests.
      KMSFS_ASSIGN_OR_RETURN(WriteTxn t, env_.BeginWrite());
      txn.emplace(std::move(t));
    }
    if (!wal_.valid()) {
      KMSFS_RETURN_IF_ERROR(WriteRecords(*txn, bodies));
      KMSFS_RETURN_IF_ERROR(txn->Commit());  // fsync; on failure LMDB dropped the whole batch
      NoteIngested(bodies.size());
      return Status::Ok();
    }
    KMSFS_RETURN_IF_ERROR(EraseLeftover());
    KMSFS_ASSIGN_OR_RETURN(Checkpoint lmdb, ReadHeadForWrite(*txn));
    KMSFS_RETURN_IF_ERROR(Reconcile(lmdb));
    if (pending_.empty()) {
      // Everything the file holds is in LMDB: start over at its beginning.
      std::lock_guard lock(wal_mu_);
      wal_offset_ = 0;
      ingest_failed_ = false;
    }
    std::vector<Pending> records = Compose(wal_head_, bodies);
    // A record longer than a frame may hold would be acknowledged but never replayed (replay
    // stops at it, and so loses the frames after it too): such a batch goes straight to LMDB.
    if (HasOversized(records)) return CommitDirect(std::move(*txn), std::move(records));
    std::string frames;
    for (const Pending& r : records) AppendWalFrame(r.sequence, r.text, &frames);
    if (frames.size() > wal_.size()) return CommitDirect(std::move(*txn), std::move(records));
    if (ingest_failed_ || pending_.size() >= std::max<size_t>(options_.ingest_every, 1) ||
        wal_offset_ + frames.size() > wal_.size()) {
      // A failed ingest refuses the batch WITHOUT writing it to the WAL: the trail stops
      // accepting records it cannot move into LMDB (fail closed) until an ingest succeeds.
      KMSFS_RETURN_IF_ERROR(IngestAndCommit(std::move(*txn)));
      txn.reset();
      // The commit let go of the writer lock: an administrative transaction may have committed
      // since (it would have taken the sequence numbers composed above). Reconcile again and
      // compose afresh; nothing is pending now, so the batch goes to the start of the file.
      KMSFS_ASSIGN_OR_RETURN(WriteTxn t, env_.BeginWrite());
      txn.emplace(std::move(t));
      KMSFS_ASSIGN_OR_RETURN(Checkpoint again, ReadHeadForWrite(*txn));
      KMSFS_RETURN_IF_ERROR(Reconcile(again));
      KMSFS_CHECK(pending_.empty());  // only a commit adds to it, and commits are serial
      {
        std::lock_guard lock(wal_mu_);
        wal_offset_ = 0;
      }
      records = Compose(wal_head_, bodies);
      if (HasOversized(records)) return CommitDirect(std::move(*txn), std::move(records));
      frames.clear();
      for (const Pending& r : records) AppendWalFrame(r.sequence, r.text, &frames);
      if (frames.size() > wal_.size()) return CommitDirect(std::move(*txn), std::move(records));
    }
    Status s = wal_.Write(wal_offset_, frames);
    if (!s.ok()) {
      // Not acknowledged: wal_head_ stays, and the next write overwrites these bytes. Erase them
      // now too, so that frames that did reach the disk cannot be replayed after a crash once an
      // administrative record has taken their sequence numbers.
      Status erased = wal_.Write(wal_offset_, std::string(frames.size(), '\0'));
      if (!erased.ok()) {
        Log()->error(
            "audit WAL: erasing a failed write also failed: {}; nothing is written until it is "
            "erased",
            erased.ToString());
        unerased_.emplace(wal_offset_, frames.size());
      }
      return s;
    }
    std::lock_guard lock(wal_mu_);
    wal_head_ = Checkpoint{records.back().sequence, records.back().hash, records.back().time_us};
    wal_offset_ += frames.size();
    for (Pending& r : records) pending_.push_back(std::move(r));
    return Status::Ok();
    // `txn` aborts here: it only held the writer lock.
  } catch (const std::exception& e) {
    // The WriteTxn (if any) aborted on unwinding; nothing of the batch is acknowledged.
    return Error(Code::kInternal, std::string("audit group commit: ") + e.what());
  }
}

Status AuditTrail::EraseLeftover() {
  if (!unerased_) return Status::Ok();
  Status s = wal_.Write(unerased_->first, std::string(unerased_->second, '\0'));
  if (!s.ok()) {
    return Error(Code::kIo,
                 "bytes of a failed audit WAL write cannot be erased (" + s.ToString() +
                     "); nothing is written to the audit trail until they are",
                 s.error().sys_errno());
  }
  unerased_.reset();
  return Status::Ok();
}

Status AuditTrail::Flush() {
  if (!wal_.valid()) return Status::Ok();
  try {
    KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_.BeginWrite());
    KMSFS_RETURN_IF_ERROR(EraseLeftover());
    KMSFS_ASSIGN_OR_RETURN(Checkpoint lmdb, ReadHeadForWrite(txn));
    KMSFS_RETURN_IF_ERROR(Reconcile(lmdb));
    if (pending_.empty()) return Status::Ok();
    return IngestAndCommit(std::move(txn));
  } catch (const std::exception& e) {
    return Error(Code::kInternal, std::string("audit ingest: ") + e.what());
  }
}

// VerifyChain and ListCheckpoints are const (AuditReader) but must see the whole trail in LMDB.
// Ingesting moves records between the WAL and LMDB without changing the trail; a trail is never
// a const object (Open hands out a non-const one), so casting const away here is defined.
Status AuditTrail::FlushForRead() const { return const_cast<AuditTrail*>(this)->Flush(); }

Status AuditTrail::Append(AuditRecord record) {
#ifdef KMSFS_BENCH_DISCARD_AUDIT
  // The bench-only "audit disabled" baseline (bench/CMakeLists.txt, kmsfs-keyd-noaudit-bench):
  // key-use records are dropped unwritten. No shipped binary is compiled with this.
  (void)record;
  return Status::Ok();
#endif
  Writer w;
  try {
    w.body = EncodeRecordBody(record);  // on the caller's thread, in parallel with the others
  } catch (const std::exception& e) {
    return Error(Code::kInternal, std::string("cannot encode audit record: ") + e.what());
  }
  std::unique_lock lock(queue_mu_);
  queue_.push_back(&w);
  in_append_.fetch_add(1, std::memory_order_relaxed);  // once queued (Stats::queued)
  ScopeExit left([&] { in_append_.fetch_sub(1, std::memory_order_relaxed); });
  if (committing_) {
    // Whoever commits now takes us with the next batch: the committer thread, or a caller that
    // commits itself and hands what queued meanwhile to that thread. Under load it commits back
    // to back: whatever queued during one commit is the next batch, at once.
    lock.unlock();
    WaitForCommit(w.state);
    return w.status;
  }
  return CommitQueueAndHandOff(lock, &w);
}

Status AuditTrail::CommitQueueAndHandOff(std::unique_lock<std::mutex>& lock, const Writer* self) {
  // Nobody commits: the caller does, without a thread hand-off (the common case at low load). The
  // batch is the queue as it is (the caller and whoever came while the last commit ended).
  committing_ = true;
  std::vector<Writer*> batch = TakeBatch();
  lock.unlock();
  Status s = CommitAndRelease(batch, self);
  lock.lock();
  if (queue_.empty()) {
    committing_ = false;
  } else {
    // Others queued during the commit: the committer thread goes on with them, so that the
    // caller gets its answer now instead of after their commit. committing_ stays set: the
    // queue is the committer's now.
    handoff_ = true;
    StartCommitterLocked(lock);
    committer_cv_.notify_one();
  }
  return s;
}

void AuditTrail::AppendAsync(AuditRecord record, std::function<void(Status)> done) {
#ifdef KMSFS_BENCH_DISCARD_AUDIT
  (void)record;  // the bench-only "audit disabled" baseline, as in Append
  done(Status::Ok());
  return;
#endif
  auto w = std::make_unique<Writer>();
  try {
    w->body = EncodeRecordBody(record);
  } catch (const std::exception& e) {
    done(Error(Code::kInternal, std::string("cannot encode audit record: ") + e.what()));
    return;
  }
  w->done = std::move(done);
  std::unique_lock lock(queue_mu_);
  queue_.push_back(w.get());  // owned by the queue now: the commit calls `done` and deletes it
  w.release();
  in_append_.fetch_add(1, std::memory_order_relaxed);
  if (committing_) return;  // the commit under way, or the committer after it, takes it
  (void)CommitQueueAndHandOff(lock, nullptr);  // our `done` got the result with the others
}

std::vector<AuditTrail::Writer*> AuditTrail::TakeBatch() {
  std::vector<Writer*> batch;
  while (!queue_.empty() && batch.size() < options_.max_batch) {
    batch.push_back(queue_.front());
    queue_.pop_front();
  }
  return batch;
}

Status AuditTrail::CommitAndRelease(const std::vector<Writer*>& batch, const Writer* self) {
  const Status s = CommitBatch(batch);
  NoteCommitResult(s, batch.size());
  for (Writer* x : batch) {
    if (x == self) continue;
    if (x->done) {
      std::unique_ptr<Writer> owned(x);
      in_append_.fetch_sub(1, std::memory_order_relaxed);
      try {
        owned->done(s);
      } catch (const std::exception& e) {
        // The caller's continuation failed (it answers its request itself even then: see
        // KmsService::HandleAsync); the record's fate is settled either way, and the other
        // writers of the batch still get theirs.
        Log()->error("audit: a caller's continuation failed: {}", e.what());
      } catch (...) {
        Log()->error("audit: a caller's continuation failed with a non-standard exception");
      }
      continue;
    }
    x->status = s;
    Release(x->state);
  }
  return s;
}

void AuditTrail::CommitUntilEmptyLocked(std::unique_lock<std::mutex>& lock) {
  while (!queue_.empty()) {
    std::vector<Writer*> batch = TakeBatch();
    lock.unlock();
    (void)CommitAndRelease(batch, nullptr);  // each writer got the result
    lock.lock();
  }
  committing_ = false;  // the next caller commits itself again
}

void AuditTrail::StartCommitterLocked(std::unique_lock<std::mutex>& lock) {
  if (committer_.joinable()) return;
  try {
    // All signals blocked: keyd handles its signals through a signalfd on the main thread.
    SignalsBlocked blocked;
    committer_ = std::thread([this] { CommitLoop(); });
  } catch (const std::exception& e) {
    // No thread: the queued writers must not wait for one that never comes. They are committed
    // here instead (the caller waits for their commit too, and for those that keep coming).
    Log()->warn("audit: cannot start the committer thread ({}); committing inline", e.what());
    handoff_ = false;
    CommitUntilEmptyLocked(lock);
  }
}

void AuditTrail::CommitLoop() {
  std::unique_lock lock(queue_mu_);
  for (;;) {
    // Only on a hand-off: committing_ alone may be a caller's own commit, which a spurious
    // wake-up must not join.
    committer_cv_.wait(lock, [&] { return stop_committer_ || handoff_; });
    if (!handoff_) return;  // stopping, and nothing was handed to us
    handoff_ = false;
    CommitUntilEmptyLocked(lock);  // owned: committing_ is set, the queue ours until empty
  }
}

Status AuditTrail::AppendInTxn(WriteTxn& txn, AuditRecord record) {
  std::string body;
  try {
    body = EncodeRecordBody(record);
  } catch (const std::exception& e) {
    return Error(Code::kInternal, std::string("cannot encode audit record: ") + e.what());
  }
  // No queue: `txn` holds the writer lock, so no group commit or ingest runs until it ends.
  if (!wal_.valid()) {
    KMSFS_RETURN_IF_ERROR(WriteRecords(txn, {&body}));
  } else {
    KMSFS_RETURN_IF_ERROR(EraseLeftover());  // `txn` holds the writer lock
    KMSFS_ASSIGN_OR_RETURN(Checkpoint lmdb, ReadHeadForWrite(txn));
    std::lock_guard lock(wal_mu_);
    // What `txn` sees may include its own earlier AppendInTxn records (not committed), so nothing
    // in memory changes here: the pending records are copied into `txn` and stay pending until
    // the next commit sees them committed (or not).
    std::vector<const Pending*> records;
    Checkpoint base = lmdb;
    if (lmdb.sequence <= wal_head_.sequence) {
      for (const Pending& p : pending_) {
        if (p.sequence > lmdb.sequence) records.push_back(&p);
      }
      const bool consistent =
          records.empty() ? lmdb.sequence == wal_head_.sequence && lmdb.hash == wal_head_.hash
                          : records.front()->sequence == lmdb.sequence + 1 &&
                                records.front()->prev_hash == lmdb.hash;
      if (!consistent) {
        return Error(Code::kCorrupt, "the audit head in audit_meta (record " +
                                         std::to_string(lmdb.sequence) +
                                         ") does not match the records this keyd made durable "
                                         "(up to " +
                                         std::to_string(wal_head_.sequence) +
                                         "): it was rolled back or altered (kmsctl audit verify)");
      }
      base = wal_head_;
    }
    const std::vector<Pending> mine = Compose(base, {&body});
    records.push_back(&mine.front());
    KMSFS_RETURN_IF_ERROR(PutComposed(txn, records));
  }
  in_txn_.fetch_add(1, std::memory_order_relaxed);
  if (journal_) journal_->Notify();  // too early to see it, but it will poll again
  return Status::Ok();
}

void AuditTrail::NoteCommitResult(const Status& s, size_t records) {
  if (s.ok()) {
    commits_.fetch_add(1, std::memory_order_relaxed);
    appended_.fetch_add(records, std::memory_order_relaxed);
    uint64_t prev = max_batch_.load(std::memory_order_relaxed);
    while (prev < records && !max_batch_.compare_exchange_weak(prev, records)) {
    }
    if (journal_) journal_->Notify();
    std::lock_guard lock(fail_mu_);
    if (failures_since_ok_ > 0) {
      Log()->warn(
          "audit trail recovered: records are being written again after {} failed "
          "commit(s)",
          failures_since_ok_);
      failures_since_ok_ = 0;
      unlogged_failures_ = 0;
      last_failure_log_us_ = 0;
    }
    return;
  }
  failed_commits_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(fail_mu_);
  ++failures_since_ok_;
  const int64_t now = options_.clock_us();
  if (last_failure_log_us_ != 0 && now - last_failure_log_us_ < options_.failure_log_interval_us) {
    ++unlogged_failures_;
    return;
  }
  Log()->critical(
      "AUDIT TRAIL CANNOT BE WRITTEN: {}; {} request(s) refused in this batch, {} failed "
      "commit(s) since the last success ({} not logged). Key requests are DENIED until the audit "
      "trail can be written again (free space in {}?)",
      s.ToString(), records, failures_since_ok_, unlogged_failures_, env_.dir());
  loud_logs_.fetch_add(1, std::memory_order_relaxed);
  unlogged_failures_ = 0;
  last_failure_log_us_ = now;
}

AuditTrail::Stats AuditTrail::GetStats() const {
  Stats s;
  s.appended = appended_.load();
  s.commits = commits_.load();
  s.failed_commits = failed_commits_.load();
  s.in_txn = in_txn_.load();
  s.max_batch = max_batch_.load();
  s.loud_logs = loud_logs_.load();
  s.ingests = ingests_.load();
  s.failed_ingests = failed_ingests_.load();
  s.queued = in_append_.load(std::memory_order_relaxed);
  return s;
}

// ---- reading ------------------------------------------------------------------------------------

Result<AuditPage> AuditTrail::List(const AuditFilter& filter) const {
  if (filter.limit == 0 || filter.limit > kMaxLimit) {
    return Error(Code::kInvalidArgument, "limit must be 1 to " + std::to_string(kMaxLimit));
  }
  // The WAL's pending records FIRST, then the LMDB snapshot: a record acknowledged before this
  // call is in one or the other (an ingest commits before it clears pending_), and one ingested
  // in between is in both — taken once, from LMDB. No ingest here: `kmsctl audit tail` and the
  // journal copy poll after every commit, and an ingest per poll would bring the syncs back.
  std::vector<std::pair<uint64_t, std::string>> wal;
  {
    std::lock_guard lock(wal_mu_);
    for (const Pending& p : pending_) {
      if (p.sequence > filter.after_sequence) wal.emplace_back(p.sequence, p.text);
    }
  }
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_.BeginRead());
  AuditPage page;
  page.next_after = filter.after_sequence;
  size_t scanned = 0;
  Status err;
  const std::string start = filter.after_sequence == 0 ? "" : SequenceKey(filter.after_sequence);
  KMSFS_RETURN_IF_ERROR(
      txn.Scan(dbs_.records, "", start, [&](std::string_view k, std::string_view v) {
        if (page.records.size() == filter.limit || scanned == kScanBudget) {
          page.more = true;
          return false;
        }
        uint64_t seq = 0;
        if (!ParseSequenceKey(k, &seq)) {
          err = Error(Code::kCorrupt, "audit database: malformed key after record " +
                                          std::to_string(page.next_after));
          return false;
        }
        auto t = DecodeTrailRecord(v);
        if (!t.ok()) {
          err = Error(Code::kCorrupt, "record " + std::to_string(seq) + ": " + t.error().message());
          return false;
        }
        ++scanned;
        page.next_after = seq;
        if (Matches(t->record, filter)) page.records.push_back(std::move(*t));
        return true;
      }));
  KMSFS_RETURN_IF_ERROR(err);
  if (page.more) return page;
  for (const auto& [seq, text] : wal) {
    if (seq <= page.next_after) continue;  // ingested meanwhile: already taken from LMDB
    if (page.records.size() == filter.limit || scanned == kScanBudget) {
      page.more = true;
      break;
    }
    auto t = DecodeTrailRecord(text);
    if (!t.ok()) {
      return Error(Code::kCorrupt, "record " + std::to_string(seq) + ": " + t.error().message());
    }
    ++scanned;
    page.next_after = seq;
    if (Matches(t->record, filter)) page.records.push_back(std::move(*t));
  }
  return page;
}

Result<AuditPage> AuditTrail::Tail(uint64_t after_sequence, size_t limit) const {
  AuditFilter f;
  f.after_sequence = after_sequence;
  f.limit = limit;
  return List(f);
}

Result<Checkpoint> AuditTrail::Head() const {
  // No ingest needed: the later of the WAL's head (read first) and LMDB's. LMDB is ahead only
  // after an administrative transaction, which holds everything pending.
  std::optional<Checkpoint> wal_head;
  if (wal_.valid()) {
    std::lock_guard lock(wal_mu_);
    wal_head = wal_head_;
  }
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_.BeginRead());
  KMSFS_ASSIGN_OR_RETURN(Checkpoint head, ReadHeadIn(txn, dbs_.meta));
  if (wal_head && wal_head->sequence > head.sequence) head = *wal_head;
  head.time_us = options_.clock_us();
  return head;
}

Result<VerifyReport> AuditTrail::VerifyChain(const std::optional<Checkpoint>& against) const {
  KMSFS_RETURN_IF_ERROR(FlushForRead());
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_.BeginRead());
  KMSFS_ASSIGN_OR_RETURN(std::optional<Checkpoint> anchor,
                         ReadPosition(txn, dbs_.meta, kAnchorKey));
  KMSFS_ASSIGN_OR_RETURN(std::optional<Checkpoint> head, ReadPosition(txn, dbs_.meta, kHeadKey));
  KMSFS_ASSIGN_OR_RETURN(std::vector<Checkpoint> stored, ReadCheckpoints(txn, dbs_.meta));
  ChainWalker walker(anchor ? anchor->sequence : 0, anchor ? anchor->hash : crypto::Sha256Digest{},
                     anchor.has_value());
  if (against) walker.AddCheckpoint(*against, "checkpoint");
  for (const Checkpoint& c : stored) walker.AddCheckpoint(c, "stored checkpoint");
  bool bad_key = false;
  KMSFS_RETURN_IF_ERROR(txn.Scan(dbs_.records, "", "", [&](std::string_view k, std::string_view v) {
    uint64_t seq = 0;
    if (!ParseSequenceKey(k, &seq)) {
      bad_key = true;
      return false;
    }
    return walker.Feed(seq, v);
  }));
  VerifyReport report = walker.Finish(head);
  if (report.ok && bad_key) {
    report.ok = false;
    report.bad_sequence = report.last + 1;
    report.message = "malformed key after record " + std::to_string(report.last) + " (altered)";
  }
  if (report.ok && !head && report.first != 0) {
    report.ok = false;
    report.bad_sequence = report.last;
    report.message = "the head position is missing from audit_meta (altered)";
  }
  return report;
}

// ---- checkpoints, export, prune -----------------------------------------------------------------

Result<Checkpoint> AuditTrail::MakeCheckpoint() {
  KMSFS_RETURN_IF_ERROR(Flush());
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_.BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(Checkpoint head, ReadHeadIn(txn, dbs_.meta));
  if (head.sequence == 0) return Error(Code::kFailedPrecondition, "the audit trail is empty");
  head.time_us = options_.clock_us();
  KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.meta, CheckpointKey(head.sequence), EncodeCheckpoint(head)));
  KMSFS_RETURN_IF_ERROR(txn.Commit());
  return head;
}

Result<std::vector<Checkpoint>> AuditTrail::ListCheckpoints() const {
  KMSFS_RETURN_IF_ERROR(FlushForRead());  // periodic checkpoints are stored when records ingest
  KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_.BeginRead());
  return ReadCheckpoints(txn, dbs_.meta);
}

Result<Checkpoint> AuditTrail::Export(uint64_t from, uint64_t to, const std::string& path) {
  KMSFS_RETURN_IF_ERROR(Flush());
  Checkpoint cp;
  {
    KMSFS_ASSIGN_OR_RETURN(ReadTxn txn, env_.BeginRead());
    KMSFS_ASSIGN_OR_RETURN(std::optional<Checkpoint> anchor,
                           ReadPosition(txn, dbs_.meta, kAnchorKey));
    KMSFS_ASSIGN_OR_RETURN(Checkpoint head, ReadHeadIn(txn, dbs_.meta));
    const uint64_t first = anchor ? anchor->sequence + 1 : 1;
    if (from == 0) from = first;
    if (to == 0) to = head.sequence;
    if (from < first) {
      return Error(Code::kFailedPrecondition, "records up to " + std::to_string(first - 1) +
                                                  " were pruned; export from " +
                                                  std::to_string(first));
    }
    if (to > head.sequence || from > to) {
      return Error(Code::kInvalidArgument, "nothing to export in " + std::to_string(from) + ".." +
                                               std::to_string(to) + " (the trail ends at " +
                                               std::to_string(head.sequence) + ")");
    }
    // The chain hash the range continues from.
    crypto::Sha256Digest start{};
    if (anchor && from - 1 == anchor->sequence) {
      start = anchor->hash;
    } else if (from > 1) {
      auto prev = txn.Get(dbs_.records, SequenceKey(from - 1));
      if (!prev.ok()) {
        return Error(Code::kCorrupt, "record " + std::to_string(from - 1) +
                                         " (before the range) is unreadable: " +
                                         prev.error().message() + "; run verify");
      }
      KMSFS_ASSIGN_OR_RETURN(TrailRecord p, DecodeTrailRecord(*prev));
      start = p.hash;
    }
    KMSFS_ASSIGN_OR_RETURN(UniqueFd fd, CreateNewFile(path));
    ScopeExit unlink_on_failure([&] { ::unlink(path.c_str()); });
    ChainWalker walker(from - 1, start, /*from_anchor=*/false);
    std::string buf;
    Status err;
    KMSFS_RETURN_IF_ERROR(txn.Scan(dbs_.records, "", SequenceKey(from - 1),
                                   [&](std::string_view k, std::string_view v) {
                                     uint64_t seq = 0;
                                     if (ParseSequenceKey(k, &seq) && seq > to) return false;
                                     if (!ParseSequenceKey(k, &seq) || !walker.Feed(seq, v))
                                       return false;
                                     buf.append(v);
                                     buf.push_back('\n');
                                     if (buf.size() >= (1u << 20)) {
                                       err = WriteAll(fd.get(), buf, path);
                                       buf.clear();
                                       if (!err.ok()) return false;
                                     }
                                     return true;
                                   }));
    KMSFS_RETURN_IF_ERROR(err);
    VerifyReport report = walker.Finish();
    if (report.ok && walker.last() != to) {
      report.ok = false;
      report.message = "sequence gap after " + std::to_string(walker.last()) + ": record " +
                       std::to_string(walker.last() + 1) + " missing";
    }
    if (!report.ok) {
      return Error(Code::kCorrupt, "not exporting a broken trail: " + report.message);
    }
    cp = Checkpoint{to, walker.last_hash(), options_.clock_us()};
    buf += "{\"Checkpoint\":" + EncodeCheckpoint(cp) + "}\n";
    KMSFS_RETURN_IF_ERROR(WriteAll(fd.get(), buf, path));
    KMSFS_RETURN_IF_ERROR(SyncNewFile(fd.get(), path));
    unlink_on_failure.Dismiss();
  }
  // Stored so that Prune can go up to it (what was exported may be pruned).
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_.BeginWrite());
  KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.meta, CheckpointKey(cp.sequence), EncodeCheckpoint(cp)));
  KMSFS_RETURN_IF_ERROR(txn.Commit());
  return cp;
}

Status AuditTrail::Prune(uint64_t up_to) {
  KMSFS_RETURN_IF_ERROR(Flush());
  KMSFS_ASSIGN_OR_RETURN(WriteTxn txn, env_.BeginWrite());
  KMSFS_ASSIGN_OR_RETURN(std::optional<Checkpoint> cp,
                         ReadPosition(txn, dbs_.meta, CheckpointKey(up_to)));
  if (!cp) {
    return Error(Code::kFailedPrecondition,
                 "no checkpoint at " + std::to_string(up_to) +
                     ": prune only up to an exported or stored checkpoint (kmsctl audit export)");
  }
  KMSFS_ASSIGN_OR_RETURN(std::optional<Checkpoint> anchor,
                         ReadPosition(txn, dbs_.meta, kAnchorKey));
  if (anchor && up_to <= anchor->sequence) {
    return Error(Code::kFailedPrecondition,
                 "already pruned up to " + std::to_string(anchor->sequence));
  }
  auto text = txn.Get(dbs_.records, SequenceKey(up_to));
  if (!text.ok()) return Error(Code::kCorrupt, "record " + std::to_string(up_to) + " is missing");
  KMSFS_ASSIGN_OR_RETURN(TrailRecord last, DecodeTrailRecord(*text));
  if (last.hash != cp->hash) {
    return Error(Code::kCorrupt, "record " + std::to_string(up_to) +
                                     " does not match its checkpoint; nothing pruned (run verify)");
  }
  std::vector<std::string> doomed;
  KMSFS_RETURN_IF_ERROR(txn.Scan(dbs_.records, "", "", [&](std::string_view k, std::string_view) {
    uint64_t seq = 0;
    if (ParseSequenceKey(k, &seq) && seq > up_to) return false;
    doomed.emplace_back(k);
    return true;
  }));
  std::vector<std::string> old_checkpoints;
  KMSFS_RETURN_IF_ERROR(
      txn.Scan(dbs_.meta, kCheckpointPrefix, "", [&](std::string_view k, std::string_view) {
        uint64_t seq = 0;
        if (ParseSequenceKey(k.substr(sizeof kCheckpointPrefix - 1), &seq) && seq >= up_to) {
          return false;
        }
        old_checkpoints.emplace_back(k);
        return true;
      }));
  for (const std::string& k : doomed) KMSFS_RETURN_IF_ERROR(txn.Delete(dbs_.records, k));
  for (const std::string& k : old_checkpoints) KMSFS_RETURN_IF_ERROR(txn.Delete(dbs_.meta, k));
  Checkpoint new_anchor{up_to, last.hash, options_.clock_us()};
  KMSFS_RETURN_IF_ERROR(txn.Put(dbs_.meta, kAnchorKey, EncodeCheckpoint(new_anchor)));
  KMSFS_RETURN_IF_ERROR(txn.Commit());
  Log()->info("audit trail pruned up to record {} (anchor kept)", up_to);
  return Status::Ok();
}

// ---- checkpoint files ---------------------------------------------------------------------------

Status WriteCheckpointFile(const Checkpoint& checkpoint, const std::string& path) {
  KMSFS_ASSIGN_OR_RETURN(UniqueFd fd, CreateNewFile(path));
  ScopeExit unlink_on_failure([&] { ::unlink(path.c_str()); });
  KMSFS_RETURN_IF_ERROR(WriteAll(fd.get(), EncodeCheckpoint(checkpoint) + "\n", path));
  KMSFS_RETURN_IF_ERROR(SyncNewFile(fd.get(), path));
  unlink_on_failure.Dismiss();
  return Status::Ok();
}

Result<Checkpoint> ReadCheckpointFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::FromErrno("open " + path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::FromErrno("stat " + path, errno);
  // Only the last line matters; an export can be large, so read its tail.
  const off_t want = std::min<off_t>(st.st_size, off_t{64} * 1024);
  std::string tail(static_cast<size_t>(want), '\0');
  size_t got = 0;
  while (got < tail.size()) {
    const ssize_t n = ::pread(fd.get(), tail.data() + got, tail.size() - got,
                              st.st_size - want + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("read " + path, errno);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  tail.resize(got);
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
  const size_t nl = tail.rfind('\n');
  const std::string line = nl == std::string::npos ? tail : tail.substr(nl + 1);
  const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("Checkpoint")) {
    auto c = DecodeCheckpoint(j["Checkpoint"].dump());
    if (!c.ok()) return Error(Code::kCorrupt, path + ": " + c.error().message());
    return c;
  }
  auto c = DecodeCheckpoint(line);
  if (!c.ok()) {
    return Error(Code::kCorrupt, path +
                                     " holds no checkpoint (neither a checkpoint file nor an "
                                     "export ending in one)");
  }
  return c;
}

}  // namespace kmsfs::keyd
