// AuditTrail: keyd's tamper-evident audit trail — hash-chained records in LMDB, group-committed,
// durable before Append returns (fail closed). Format and procedures: docs/audit.md.
//
// Layout, in the store's Env (KeyStore::env()):
//   audit       SequenceKey(n) (u64 big-endian) → the record's JSON text (record_codec.h)
//   audit_meta  "format" → {"Format":1}; "head" → {"Sequence","Hash"} of the last record;
//               "anchor" → {"Sequence","Hash"} of the last pruned record (absent before a prune);
//               "checkpoint/" + SequenceKey(n) → checkpoint JSON (record_codec.h)
//
// Group commit. Concurrent Append callers queue; the caller at the front becomes the leader,
// writes every queued record (up to max_batch) in ONE LMDB write transaction, commits (fsync),
// and hands the one result to all of them (LevelDB's writer queue). Records queued during a
// commit form the next batch, so commits per second stay bounded by the disk while appends per
// second grow with the number of concurrent callers.
//
// The chain head. There is no in-memory head: every writer (the leader and AppendInTxn) reads
// the head from audit_meta inside its own write transaction and writes the new head there. The
// LMDB writer lock is therefore the chain lock, and a transaction that aborts (a failed commit,
// a full disk, an outer store change that fails after AppendInTxn) takes its records and its
// head with it — nothing in memory can run ahead of what is on disk.
//
// Threading: thread-safe. Lock order: the queue mutex is never held while waiting for the LMDB
// writer lock; AppendInTxn runs under the writer lock and never takes the queue mutex. Never
// call Append on a thread that holds a WriteTxn (it would wait for its own writer lock).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "keyd/audit/audit_reader.h"
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
    uint64_t checkpoint_every = 1000;   // store a checkpoint each time the head passes a multiple
    size_t max_batch = 1024;            // records per group commit
    // A new leader waits up to min(this, a tenth of the last commit) for as many callers as the
    // last round saw (see Append). 0: commit at once.
    int64_t max_gather_us = 1000;
    Journal journal = Journal::kAuto;
    int64_t failure_log_interval_us = 10'000'000;  // at most one loud log line per interval
    // After every this many appended records, Env::ReleaseMappedPages: commits read the trail's
    // newest pages through LMDB's map, and without this keyd's RSS grows ~0.7 KiB per record.
    // 0: never.
    uint64_t release_map_every = 2048;
  };
  struct Stats {
    uint64_t appended = 0;        // records committed by Append
    uint64_t commits = 0;         // successful group commits (transactions)
    uint64_t failed_commits = 0;  // batches that failed (their callers were refused)
    uint64_t in_txn = 0;          // AppendInTxn calls that wrote a record (commit not known)
    uint64_t max_batch = 0;       // largest batch so far
    uint64_t loud_logs = 0;       // critical "cannot be written" lines (the rate limiter's output)
  };

  // Opens (creating if needed) "audit" and "audit_meta" in `env`, which must outlive the trail.
  // kFailedPrecondition for a trail written in another layout (e.g. the interim sink's).
  // Call at startup, never while this thread holds a WriteTxn.
  static Result<std::unique_ptr<AuditTrail>> Open(Env& env, Options options);
  static Result<std::unique_ptr<AuditTrail>> Open(Env& env) { return Open(env, Options{}); }
  ~AuditTrail() override;
  AuditTrail(const AuditTrail&) = delete;
  AuditTrail& operator=(const AuditTrail&) = delete;

  // Assigns sequence and time, chains, and returns once the record is committed (fsync), or the
  // error that kept it (and the rest of its batch) from being written: kIo with the OS errno
  // (ENOSPC, EIO), kCorrupt for a damaged head. The caller must then refuse the request. Each
  // failure is logged at critical, rate-limited. The next Append simply tries again.
  Status Append(AuditRecord record) override;
  // Writes the record into `txn` (chained on the head as `txn` sees it); it is durable when the
  // caller commits `txn` and vanishes, head included, if it aborts.
  Status AppendInTxn(WriteTxn& txn, AuditRecord record) override;

  // Matching records in sequence order, scanning at most 100000 records per call.
  // kInvalidArgument for a bad limit; kCorrupt if a scanned record does not decode.
  Result<AuditPage> List(const AuditFilter& filter) const override;
  // Records after `after_sequence` (for `kmsctl audit tail --follow` polling). limit 1..10000.
  Result<AuditPage> Tail(uint64_t after_sequence, size_t limit) const;
  // The last committed record (or the anchor, or 0/zeros), as a checkpoint stamped now.
  Result<Checkpoint> Head() const override;

  // Walks the whole trail from the anchor (or record 1) in one snapshot, checking each record's
  // hash and link, density and order, the stored head and checkpoints, and `against` (a
  // checkpoint kept elsewhere). A break is a report with ok=false, not an error; errors are I/O.
  Result<VerifyReport> VerifyChain(
      const std::optional<Checkpoint>& against = std::nullopt) const override;

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
  AuditTrail(Env& env, Dbs dbs, Options options);
  Status CommitBatch(const std::vector<Writer*>& batch);
  Status WriteRecords(WriteTxn& txn, const std::vector<const std::string*>& bodies);
  Result<Checkpoint> ReadHeadForWrite(WriteTxn& txn);
  void RememberHead(std::string text, const Checkpoint& head);
  void NoteCommitResult(const Status& s, size_t records);

  Env& env_;
  const Dbs dbs_;
  const Options options_;

  std::mutex queue_mu_;
  std::deque<Writer*> queue_;    // GUARDED_BY(queue_mu_); the front is the leader
  size_t expected_writers_ = 0;  // GUARDED_BY(queue_mu_); callers seen around the last commit
  int64_t last_commit_ns_ = 0;   // GUARDED_BY(queue_mu_); how long the last commit took
  size_t gather_target_ = 0;     // GUARDED_BY(queue_mu_); nonzero while a leader gathers

  std::mutex head_memo_mu_;     // a decode cache of the stored head (ReadHeadForWrite)
  std::string head_memo_text_;  // GUARDED_BY(head_memo_mu_); "" until the first write
  Checkpoint head_memo_;        // GUARDED_BY(head_memo_mu_); DecodeCheckpoint(head_memo_text_)

  std::mutex fail_mu_;               // the loud-failure rate limiter
  int64_t last_failure_log_us_ = 0;  // GUARDED_BY(fail_mu_)
  uint64_t unlogged_failures_ = 0;   // GUARDED_BY(fail_mu_)
  uint64_t failures_since_ok_ = 0;   // GUARDED_BY(fail_mu_)

  std::atomic<uint64_t> appended_{0}, commits_{0}, failed_commits_{0}, in_txn_{0}, max_batch_{0},
      loud_logs_{0};
  std::unique_ptr<JournalEmitter> journal_;  // null when the journal copy is off
};

// Checkpoint files: WriteCheckpointFile creates a NEW file (0600, fsync'ed) holding the
// checkpoint JSON. ReadCheckpointFile accepts that or an Export file (its last line).
Status WriteCheckpointFile(const Checkpoint& checkpoint, const std::string& path);
Result<Checkpoint> ReadCheckpointFile(const std::string& path);

}  // namespace kmsfs::keyd
