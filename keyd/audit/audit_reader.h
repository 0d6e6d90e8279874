// AuditReader: what the key service may ask of the audit trail besides appending — list, verify,
// checkpoint, export and prune (the ListAudit/VerifyAudit/... operations of keyd/service).
//
// Why an interface and not AuditTrail itself: KmsService takes its collaborators as interfaces
// (STYLE.md §1), its tests run with sinks that have no trail to read (SimpleAuditSink, fakes), and
// the reader is optional there — without one the audit operations are
// UnsupportedOperationException. AuditTrail implements it (keyd/audit/audit_trail.h).
// The name says "reader" although Export and Prune change the trail's retention: they are the
// operator's view of the trail, never an append path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "keyd/audit/chain_verifier.h"
#include "keyd/audit/record_codec.h"

namespace kmsfs::keyd {

// List's filter; unset fields match everything.
struct AuditFilter {
  uint64_t after_sequence = 0;          // records with a larger sequence number
  std::optional<int64_t> from_time_us;  // Time >= from
  std::optional<int64_t> to_time_us;    // Time < to
  std::optional<std::string> key_id;
  std::optional<uint32_t> uid;             // the principal's uid
  std::optional<std::string> path_prefix;  // "/a/b" matches "/a/b" and "/a/b/…", not "/a/bc"
  std::optional<std::string> operation;
  std::optional<std::string> outcome;
  size_t limit = 100;  // 1..10000 matches
};

struct AuditPage {
  std::vector<TrailRecord> records;
  uint64_t next_after = 0;  // the last sequence scanned: pass as after_sequence to go on
  bool more = false;        // the scan stopped at the limit or the scan budget, not at the end
};

// Thread-safe (implementations). Semantics: AuditTrail's methods of the same names.
class AuditReader {
 public:
  virtual ~AuditReader() = default;
  virtual Result<AuditPage> List(const AuditFilter& filter) const = 0;
  virtual Result<Checkpoint> Head() const = 0;
  virtual Result<VerifyReport> VerifyChain(const std::optional<Checkpoint>& against) const = 0;
  virtual Result<Checkpoint> MakeCheckpoint() = 0;
  virtual Result<Checkpoint> Export(uint64_t from_sequence, uint64_t to_sequence,
                                    const std::string& path) = 0;
  virtual Status Prune(uint64_t up_to) = 0;
};

}  // namespace kmsfs::keyd
