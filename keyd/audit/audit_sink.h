// AuditSink: where keyd's audit records go; Append returns only once the record is durable.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "common/base/status.h"
#include "keyd/service/caller_context.h"

namespace kmsfs::keyd {

// One record per key use or administrative change. Never key material, never file contents.
struct AuditRecord {
  uint64_t sequence = 0;   // assigned by the sink
  int64_t time_us = 0;     // assigned by the sink (wall clock, microseconds since epoch)
  std::string operation;   // "Decrypt", "CreateKey", ...
  std::string key_id;      // may be empty (ListKeys, failed resolution)
  uint32_t key_version = 0;
  Principal principal;                // CallerContext::Effective()
  std::optional<Principal> forwarder; // the peer, when it forwarded for someone else
  std::map<std::string, std::string> encryption_context;
  std::string path;        // kmsfs:Path if any
  std::string decision;    // "Allow" | "Deny" | "" (no policy decision involved)
  std::string sid;         // deciding statement
  std::string outcome;     // "Success" or the AWS error name
  std::string detail;      // short reason (never secrets)
};

// Thread-safe. Append blocks until the record is committed durably (fsync) or fails; callers
// must not release a key unless it returned OK (fail closed). Implementations may group-commit
// concurrent appends into one transaction.
class AuditSink {
 public:
  virtual ~AuditSink() = default;
  virtual Status Append(AuditRecord record) = 0;
  // Append without waiting: `done` is called exactly once with what Append would have returned,
  // on this thread or on another (a group committer's), after the record is durable or has
  // failed. `done` must be quick and must not append to the sink (on the committing thread it
  // would wait for itself). Default: Append, then `done`, on this thread.
  virtual void AppendAsync(AuditRecord record, std::function<void(Status)> done) {
    done(Append(std::move(record)));
  }
  // Makes every record acknowledged so far part of the store's state of record (AuditTrail drains
  // its write-ahead file into LMDB), so that a state backup taken next holds them. Sinks that
  // write straight into the store have nothing to do.
  virtual Status Flush() { return Status::Ok(); }
};

}  // namespace kmsfs::keyd
