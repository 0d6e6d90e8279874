// TransactionalAuditSink: an AuditSink that can also write a record inside a store transaction.
#pragma once

#include "common/base/status.h"
#include "keyd/audit/audit_sink.h"
#include "keyd/store/lmdb_env.h"

namespace kmsfs::keyd {

// Why: an administrative change (DisableKey, PutKeyPolicy, a rotation, a key destruction) and its
// audit record must stand or fall together. KeyStore runs a TxnHook inside the change's own
// LMDB write transaction; a sink implementing this interface writes its record there, so a crash
// can never leave a change without its record (or a record of a change that did not happen).
// The service discovers the capability with dynamic_cast and falls back to Append after the
// change otherwise.
//
// AppendInTxn runs on the thread that owns `txn`, while it holds LMDB's writer lock: it must not
// begin another transaction or call into KeyStore. The record is durable only once `txn`
// commits; if the transaction aborts, the record vanishes with the change. Returning an error
// aborts the change (fail closed).
class TransactionalAuditSink : public AuditSink {
 public:
  virtual Status AppendInTxn(WriteTxn& txn, AuditRecord record) = 0;
};

}  // namespace kmsfs::keyd
