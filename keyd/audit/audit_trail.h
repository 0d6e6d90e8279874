// AuditTrail: keyd's tamper-evident audit trail — hash-chained records, group-committed through
// a write-ahead file, durable before Append returns (fail closed), kept in LMDB. Format and
// procedures: docs/audit.md.
//
// Layout, in the store's Env (KeyStore::env()):
//   audit       SequenceKey(n) (u64 big-endian) → the record's JSON text (record_codec.h)
//   audit_meta  "format" → {"Format":1}; "head" → {"Sequence","Hash"} of the last record;
//               "anchor" → {"Sequence","Hash"} of the last pruned record (absent before a prune);
//               "checkpoint/" + SequenceKey(n) → checkpoint JSON (record_codec.h)
// and <Env::dir()>/audit.wal (audit_wal.h): records durable but not yet in LMDB.
//
// Group commit. Concurrent Append callers queue. When nobody is committing, the caller commits
// its own record (and whatever queued with it) itself; others that come meanwhile queue, and at
// its end it hands them to the committer thread, which commits back to back for as long as
// records queue (each batch: every queued record up to max_batch, composed, written to audit.wal
// with ONE pwrite + fdatasync, one result for all of them), then lets callers commit themselves
// again. So a lone caller pays no thread hand-off, and under load no commit waits for a woken
// leader or a gather window: whatever queued during one fdatasync is the next batch, at once. Records
// durable only in the WAL ("pending") are drained ("ingested") into LMDB in one transaction once
// ingest_every of them have gathered, when the file is full, and by Flush (readers that need the
// whole trail in LMDB, Backup, the destructor). LMDB stays the trail of record.
//
// The chain head. The committer holds LMDB's writer lock for the whole step (a write transaction it
// aborts unless it ingests), so AppendInTxn, ingests and commits exclude each other; the LMDB
// writer lock is the chain lock. The in-memory head (wal_head_) only ever names a record that is
// durable (in the WAL or LMDB); AppendInTxn never changes it: its record (and the pending ones it
// copies into the caller's transaction) become durable when that transaction commits, which the
// next commit sees as an LMDB head beyond wal_head_ (reconcile), and vanish if it aborts.
//
// Threading: thread-safe. Lock order: queue_mu_ is never held while waiting for the LMDB writer
// lock; wal_mu_ is taken under the writer lock (or alone, by readers) and never held while waiting
// for anything. AppendInTxn never takes queue_mu_. Never call Append, Flush or the destructor on a
// thread that holds a WriteTxn (it would wait for its own writer lock).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/base/status.h"
#include "keyd/audit/audit_reader.h"
#include "keyd/audit/audit_wal.h"
#include "keyd/audit/chain_verifier.h"
#include "keyd/audit/record_codec.h"
#include "keyd/audit/transactional_audit_sink.h"
#include "keyd/store/lmdb_env.h"

namespace kmsfs::keyd {

class JournalEmitter;

class AuditTrail final : public TransactionalAuditSink, public AuditReader {
 public:
  enum class Journal { kAuto, kOff, kOn };  // kAuto: on when log::DetectSink() is the journal
  struct Options {
    std::function<int64_t()> clock_us;  // wall clock, µs since the epoch; default system_clock
    uint64_t checkpoint_every = 1000;   // store a checkpoint at each multiple of this sequence
    size_t max_batch = 1024;            // records per group commit
    Journal journal = Journal::kAuto;
    int64_t failure_log_interval_us = 10'000'000;  // at most one loud log line per interval
    // After every this many records written into LMDB, Env::ReleaseMappedPages: commits read the
    // trail's newest pages through LMDB's map, and without this keyd's RSS grows ~0.7 KiB per
    // record. 0: never.
    uint64_t release_map_every = 2048;
    // Size of the preallocated write-ahead file audit.wal. 0: no WAL, every group commit is an
    // LMDB transaction (two syncs). A batch larger than the file also commits directly.
    uint64_t wal_bytes = uint64_t{8} << 20;
    // Ingest the WAL into LMDB once this many records are pending there. Also bounds how many
    // requests can still succeed after the disk filled up (their WAL records are durable) before
    // a failing ingest makes the trail refuse.
    size_t ingest_every = 256;
    // Test only: fault injection into audit.wal writes (WalFile::set_fault_for_test).
    std::function<int(bool sync)> wal_fault_for_test;
  };
  struct Stats {
    uint64_t appended = 0;        // records made durable by Append
    uint64_t commits = 0;         // successful durable group commits (WAL writes or transactions)
    uint64_t failed_commits = 0;  // batches that failed (their callers were refused)
    uint64_t ingests = 0;         // WAL records drained into LMDB (transactions)
    uint64_t failed_ingests = 0;  // ingest transactions that failed (e.g. the disk is full)
    uint64_t in_txn = 0;          // AppendInTxn calls that wrote a record (commit not known)
    uint64_t max_batch = 0;       // largest batch so far
    uint64_t loud_logs = 0;       // critical "cannot be written" lines (the rate limiter's output)
    uint64_t queued = 0;          // Append callers waiting now (those being committed included)
  };

  // Opens (creating if needed) "audit" and "audit_meta" in `env`, which must outlive the trail,
  // and the WAL (creating and preallocating it; if that fails, e.g. on a full disk, it warns once
  // and commits every batch in LMDB). Replays the WAL: records durable there but not in LMDB are
  // ingested; if that commit fails with kIo (a full disk), they stay pending in the WAL and the
  // trail starts fail-closed (Append refuses until an ingest succeeds). kFailedPrecondition for a trail written in another layout (e.g. the interim
  // sink's); kCorrupt when valid WAL records do not continue the LMDB head (a WAL of another
  // history: tamper evidence, never dropped silently); kPermissionDenied for an unsafe WAL file.
  // Call at startup, never while this thread holds a WriteTxn.
  static Result<std::unique_ptr<AuditTrail>> Open(Env& env, Options options);
  static Result<std::unique_ptr<AuditTrail>> Open(Env& env) { return Open(env, Options{}); }
  // Ingests what is pending (best effort: on failure it logs, and the WAL keeps the records for
  // the next Open).
  ~AuditTrail() override;
  AuditTrail(const AuditTrail&) = delete;
  AuditTrail& operator=(const AuditTrail&) = delete;

  // Assigns sequence and time, chains, and returns once the record is durable (fdatasync of the
  // WAL, or an LMDB commit), or the error that kept it (and the rest of its batch) from being
  // written: kIo with the OS errno (ENOSPC, EIO; also when the WAL is due for an ingest and the
  // ingest fails), kCorrupt for a damaged or rolled-back head. The caller must then refuse the
  // request. Each failure is logged at critical, rate-limited. The next Append simply tries again
  // (a failed ingest first).
  Status Append(AuditRecord record) override;
  // As Append, but returns at once: `done` runs on the thread that commits the record's batch
  // (this one when nobody else commits, else the committer thread or another caller), after the
  // commit, outside every lock of the trail.
  void AppendAsync(AuditRecord record, std::function<void(Status)> done) override;
  // Writes the records pending in the WAL and then this record into `txn` (chained on the trail's
  // head); they are durable in LMDB when the caller commits `txn` and vanish from it, head
  // included, if it aborts (the pending ones stay durable in the WAL).
  Status AppendInTxn(WriteTxn& txn, AuditRecord record) override;
  // Ingests every record pending in the WAL into LMDB (one transaction). OK when nothing is
  // pending; the ingest's error otherwise (the records stay in the WAL).
  Status Flush() override;

  // Matching records in sequence order, scanning at most 100000 records per call. Sees every
  // acknowledged record, including those only in the WAL, without ingesting them.
  // kInvalidArgument for a bad limit; kCorrupt if a scanned record does not decode.
  Result<AuditPage> List(const AuditFilter& filter) const override;
  // Records after `after_sequence` (for `kmsctl audit tail --follow` polling). limit 1..10000.
  Result<AuditPage> Tail(uint64_t after_sequence, size_t limit) const;
  // The last durable record (or the anchor, or 0/zeros), as a checkpoint stamped now.
  Result<Checkpoint> Head() const override;

  // Ingests the WAL (Flush; its error if that fails), then walks the whole trail from the anchor
  // (or record 1) in one snapshot, checking each record's
  // hash and link, density and order, the stored head and checkpoints, and `against` (a
  // checkpoint kept elsewhere). A break is a report with ok=false, not an error; errors are I/O.
  Result<VerifyReport> VerifyChain(
      const std::optional<Checkpoint>& against = std::nullopt) const override;

  // MakeCheckpoint, ListCheckpoints, Export and Prune Flush first (and fail with its error).
  // Stores a checkpoint at the current head and returns it (kFailedPrecondition if empty).
  Result<Checkpoint> MakeCheckpoint() override;
  Result<std::vector<Checkpoint>> ListCheckpoints() const;

  // Writes records from..to (0 = first / head) as JSON lines to a NEW file `path` (0600,
  // fsync'ed), then {"Checkpoint":{...}} for `to`, and stores that checkpoint. kCorrupt (and no
  // file) if the range does not verify; kFailedPrecondition if `from` was pruned.
  Result<Checkpoint> Export(uint64_t from_sequence, uint64_t to_sequence,
                            const std::string& path) override;
  // Deletes records <= `up_to`, which must be a stored checkpoint matching its record, and keeps
  // (up_to, its hash) as the anchor the rest verifies from. kFailedPrecondition otherwise.
  Status Prune(uint64_t up_to) override;

  Stats GetStats() const;

 private:
  struct Writer;
  struct Dbs {
    Db records, meta;
  };
  // A record durable in the WAL and not known to be in LMDB.
  struct Pending {
    uint64_t sequence = 0;
    int64_t time_us = 0;
    crypto::Sha256Digest prev_hash{}, hash{};
    std::string text;  // the stored JSON line (ComposeRecord)
  };
  AuditTrail(Env& env, Dbs dbs, Options options);
  Status OpenWal();  // at Open: create/replay/preallocate; leaves wal_ invalid to run without
  // At Open, when the replay's LMDB commit failed with kIo: keeps `kept` (the frames up to `end`)
  // pending in `file` with ingest_failed_ set, so keyd starts fail-closed instead of not at all.
  Status KeepPendingAtOpen(WalFile file, std::vector<Pending> kept, uint64_t end,
                           const Status& ingest_error);
  Status CommitBatch(const std::vector<Writer*>& batch);
  // Group commit (see Append): the queue's front, up to max_batch (under queue_mu_); commit and
  // hand each writer but `self` the result; the committer thread's loop and its start (under
  // queue_mu_; without a thread the queue is committed by the caller).
  std::vector<Writer*> TakeBatch();
  // A caller that found nobody committing: commits the queue (under `lock`, released meanwhile)
  // and hands what queued during it to the committer thread. `self`: the caller's own writer
  // (waits on nothing; gets the result returned), or null.
  Status CommitQueueAndHandOff(std::unique_lock<std::mutex>& lock, const Writer* self);
  Status CommitAndRelease(const std::vector<Writer*>& batch, const Writer* self);
  void StartCommitterLocked(std::unique_lock<std::mutex>& lock);
  // The owner of the queue (committing_ set) commits it batch by batch until it is empty, then
  // clears committing_. `lock` holds queue_mu_ and is released during each commit.
  void CommitUntilEmptyLocked(std::unique_lock<std::mutex>& lock);
  void CommitLoop();
  // Zeros (and fdatasyncs) the frames of a failed WAL write whose first erasure failed too. Until
  // that succeeds nothing else may change the WAL or the trail (see unerased_). Caller holds the
  // writer lock.
  Status EraseLeftover();
  Status CommitDirect(WriteTxn txn, std::vector<Pending> records);
  Status WriteRecords(WriteTxn& txn, const std::vector<const std::string*>& bodies);
  // Puts already composed records into `txn` (kNoOverwrite; an existing key is kCorrupt), the
  // new head, and a checkpoint at each multiple of checkpoint_every.
  Status PutComposed(WriteTxn& txn, const std::vector<const Pending*>& records);
  // Composes `bodies` chained on `base`.
  std::vector<Pending> Compose(const Checkpoint& base,
                               const std::vector<const std::string*>& bodies) const;
  // Brings pending_/wal_head_ up to date with the LMDB head `lmdb` (read under the writer lock):
  // drops what an ingest or an admin transaction put there. kCorrupt if `lmdb` is behind what
  // this process made durable (a rolled-back head). Caller holds the writer lock.
  Status Reconcile(const Checkpoint& lmdb);
  // Puts pending_ into `txn` and commits it; on success empties pending_ (offset 0). Caller holds
  // the writer lock through `txn`, after Reconcile.
  Status IngestAndCommit(WriteTxn txn);
  Result<Checkpoint> ReadHeadForWrite(WriteTxn& txn);
  void RememberHead(std::string text, const Checkpoint& head);
  void NoteCommitResult(const Status& s, size_t records);
  void NoteIngested(size_t records);
  Status FlushForRead() const;

  Env& env_;
  const Dbs dbs_;
  const Options options_;

  mutable std::mutex queue_mu_;
  std::deque<Writer*> queue_;  // GUARDED_BY(queue_mu_); waiting for a commit to take them
  // GUARDED_BY(queue_mu_): somebody commits now (an Append caller or the committer thread) and
  // will take what queues meanwhile; whoever sets it owns the queue until it clears it.
  bool committing_ = false;
  bool handoff_ = false;  // GUARDED_BY(queue_mu_); a caller handed the queue to the committer
  bool stop_committer_ = false;  // GUARDED_BY(queue_mu_); the destructor
  std::condition_variable committer_cv_;
  std::thread committer_;  // started at the first hand-off; joined by the destructor
  std::atomic<uint64_t> in_append_{0};  // callers inside Append (Stats::queued)

  std::mutex head_memo_mu_;     // a decode cache of the stored head (ReadHeadForWrite)
  std::string head_memo_text_;  // GUARDED_BY(head_memo_mu_); "" until the first write
  Checkpoint head_memo_;        // GUARDED_BY(head_memo_mu_); DecodeCheckpoint(head_memo_text_)

  // The WAL. wal_ is set up by Open and then used only under LMDB's writer lock. The fields below
  // are written only by a thread holding the writer lock, and then under wal_mu_; readers
  // (List, Tail, Head) take wal_mu_ alone.
  WalFile wal_;  // !valid(): no WAL (wal_bytes 0 or it could not be created)
  mutable std::mutex wal_mu_;
  Checkpoint wal_head_;          // the last record durable in the WAL or LMDB
  std::deque<Pending> pending_;  // durable in the WAL, not known to be in LMDB; in sequence order
  uint64_t wal_offset_ = 0;      // where the next frames go
  bool ingest_failed_ = false;   // the last ingest failed: the next commit retries it first
  // The range (offset, length) of a failed WAL write that could not be zeroed. Its frames may be
  // intact on disk; once an admin record (or a later batch) took their sequence numbers, a replay
  // after a crash would find valid frames that do not chain and report a false kCorrupt. So the
  // next commit, AppendInTxn and Flush erase it first and refuse to go on while that fails.
  // Used only under the writer lock.
  std::optional<std::pair<uint64_t, uint64_t>> unerased_;

  std::mutex fail_mu_;               // the loud-failure rate limiter
  int64_t last_failure_log_us_ = 0;  // GUARDED_BY(fail_mu_)
  uint64_t unlogged_failures_ = 0;   // GUARDED_BY(fail_mu_)
  uint64_t failures_since_ok_ = 0;   // GUARDED_BY(fail_mu_)

  std::atomic<uint64_t> appended_{0}, commits_{0}, failed_commits_{0}, in_txn_{0}, max_batch_{0},
      loud_logs_{0}, ingests_{0}, failed_ingests_{0}, ingested_{0};
  std::unique_ptr<JournalEmitter> journal_;  // null when the journal copy is off
};

// Checkpoint files: WriteCheckpointFile creates a NEW file (0600, fsync'ed) holding the
// checkpoint JSON. ReadCheckpointFile accepts that or an Export file (its last line).
Status WriteCheckpointFile(const Checkpoint& checkpoint, const std::string& path);
Result<Checkpoint> ReadCheckpointFile(const std::string& path);

}  // namespace kmsfs::keyd
