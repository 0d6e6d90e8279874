// ChainWalker: checks stored audit records, in key order, against the hash chain and names the
// first record that was altered, removed or reordered, and a tail cut short of a checkpoint.
//
// Why a streaming walker and not a function over the trail: AuditTrail::VerifyChain feeds it from
// one LMDB read snapshot, Export feeds it the range being exported, and tests feed it text — none
// of them needs the whole trail in memory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/crypto/hash.h"
#include "keyd/audit/record_codec.h"

namespace kmsfs::keyd {

struct VerifyReport {
  bool ok = true;
  uint64_t first = 0;                // first record verified; 0 when none was
  uint64_t last = 0;                 // last record verified (or the start point when none was)
  std::optional<uint64_t> anchor;    // the prune anchor the walk started from, if any
  uint64_t checkpoints_matched = 0;  // checkpoints (stored or given) that agreed
  uint64_t bad_sequence = 0;         // when !ok: the first sequence number at fault
  // "verified 41..52 from anchor at 40" (+ "; matches the checkpoint at 52" when one labelled
  // "checkpoint" was given), "record 17: hash mismatch (altered)",
  // "sequence gap after 16: record 17 missing", "record 18 precedes 17 (reordered)",
  // "trail ends at 40 but checkpoint says 52", ...
  std::string message;
};

// Not thread-safe; one walk per object.
class ChainWalker {
 public:
  // The walk starts after `start_sequence`, whose chain hash is `start_hash`: (0, zeros) for a
  // whole trail, a prune anchor (`from_anchor`) or the record before an exported range.
  ChainWalker(uint64_t start_sequence, const crypto::Sha256Digest& start_hash, bool from_anchor);

  // A position to compare with when the walk passes it (or, at Finish, one past the end: the
  // trail was truncated). `label` names it in messages ("checkpoint", "stored checkpoint").
  // Positions before the start cannot be checked and are ignored. Add them before Feed.
  void AddCheckpoint(const Checkpoint& checkpoint, std::string label = "checkpoint");

  // Feeds the record stored under key `key_sequence`. Returns false once a break was found; feed
  // nothing more then.
  bool Feed(uint64_t key_sequence, std::string_view stored);

  // Ends the walk: checkpoints not yet passed lie beyond the end (a truncated tail). `head`, when
  // given, is where the trail claims to end (audit_meta's head): a shorter trail is truncated,
  // a longer one means the head was rolled back, and its hash must match.
  VerifyReport Finish(const std::optional<Checkpoint>& head = std::nullopt);

  uint64_t last() const { return last_; }
  const crypto::Sha256Digest& last_hash() const { return last_hash_; }

 private:
  struct Mark {
    Checkpoint checkpoint;
    std::string label;
  };
  bool Fail(uint64_t sequence, std::string message);
  bool CheckMarksAt(uint64_t sequence, const crypto::Sha256Digest& hash);

  const uint64_t start_;
  const bool from_anchor_;
  uint64_t last_;
  crypto::Sha256Digest last_hash_;
  std::vector<Mark> marks_;
  VerifyReport report_;
};

}  // namespace kmsfs::keyd
