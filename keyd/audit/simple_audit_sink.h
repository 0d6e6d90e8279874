// SimpleAuditSink: the INTERIM durable audit sink — one JSON record per LMDB commit, no hash chain.
//
// It exists so that keyd works end to end (fail closed, durable before return) until the
// hash-chained, group-committing audit trail replaces it behind the same AuditSink interface.
// It gives durability and order, not tamper evidence: anyone who can write the state directory
// can edit or delete records undetected.
//
// Layout, in the store's Env (KeyStore::env()):
//   audit       %016x (sequence, fixed-width lower-case hex, so keys sort in order) → JSON record
//   audit_meta  "next_sequence" → decimal text of the next sequence number (absent = 1)
// Record JSON: {"Sequence", "Time" (microseconds since the epoch), "Operation", "KeyId",
// "KeyVersion", "Principal": {"Uid","Gid","Pid","Executable","Unit"}, "Forwarder" (same shape,
// only when forwarded), "EncryptionContext", "Path", "Decision", "Sid", "Outcome", "Detail"};
// empty strings and a zero KeyVersion are omitted.
//
// Threading: thread-safe. Append runs its own write transaction (LMDB serializes writers), so
// sequence numbers are gap-free and in commit order. Never call Append from a thread that holds
// a WriteTxn (self-deadlock); use AppendInTxn there.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/status.h"
#include "keyd/audit/transactional_audit_sink.h"
#include "keyd/store/lmdb_env.h"

namespace kmsfs::keyd {

class SimpleAuditSink final : public TransactionalAuditSink {
 public:
  struct Options {
    // Wall clock in microseconds since the epoch; default std::chrono::system_clock.
    std::function<int64_t()> clock_us;
  };

  // Opens (creating if needed) the "audit" and "audit_meta" databases of `env`, which must
  // outlive the sink. Call at startup, not while this thread holds a WriteTxn.
  static Result<std::unique_ptr<SimpleAuditSink>> Open(Env& env, Options options);
  static Result<std::unique_ptr<SimpleAuditSink>> Open(Env& env) { return Open(env, Options{}); }

  // One write transaction per record, committed (fsync) before OK. Assigns sequence and time.
  Status Append(AuditRecord record) override;
  // Writes the record into `txn`; durable when the caller commits it.
  Status AppendInTxn(WriteTxn& txn, AuditRecord record) override;

  // Records with sequence > `after`, in order, at most `limit` (1..1000). For tests and tools;
  // kCorrupt if a stored record does not decode.
  Result<std::vector<AuditRecord>> Read(uint64_t after, size_t limit) const;

  SimpleAuditSink(const SimpleAuditSink&) = delete;
  SimpleAuditSink& operator=(const SimpleAuditSink&) = delete;

 private:
  SimpleAuditSink(Env& env, Db records, Db meta, std::function<int64_t()> clock_us)
      : env_(env), records_(records), meta_(meta), clock_us_(std::move(clock_us)) {}

  Env& env_;
  const Db records_;
  const Db meta_;
  const std::function<int64_t()> clock_us_;
};

// The record's JSON text as stored above, and back (kCorrupt on anything malformed). Exposed for
// tests and for the later audit trail's migration of interim records.
Result<std::string> EncodeAuditRecord(const AuditRecord& record);
Result<AuditRecord> DecodeAuditRecord(std::string_view json_text);

}  // namespace kmsfs::keyd
