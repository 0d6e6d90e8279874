#include "keyd/audit/chain_verifier.h"

#include <algorithm>
#include <utility>

namespace kmsfs::keyd {
namespace {
constexpr char kExternalLabel[] = "checkpoint";  // AddCheckpoint's default: one kept elsewhere
}  // namespace

ChainWalker::ChainWalker(uint64_t start_sequence, const crypto::Sha256Digest& start_hash,
                         bool from_anchor)
    : start_(start_sequence),
      from_anchor_(from_anchor),
      last_(start_sequence),
      last_hash_(start_hash) {
  if (from_anchor) report_.anchor = start_sequence;
}

void ChainWalker::AddCheckpoint(const Checkpoint& checkpoint, std::string label) {
  if (checkpoint.sequence < start_) return;  // pruned away: nothing left to compare with
  marks_.push_back(Mark{checkpoint, std::move(label)});
  std::stable_sort(marks_.begin(), marks_.end(), [](const Mark& a, const Mark& b) {
    return a.checkpoint.sequence < b.checkpoint.sequence;
  });
}

bool ChainWalker::Fail(uint64_t sequence, std::string message) {
  if (!report_.ok) return false;  // the first break wins
  report_.ok = false;
  report_.bad_sequence = sequence;
  report_.message = std::move(message);
  return false;
}

// Marks at `sequence` must agree with the chain hash there. Removes the marks it checked.
bool ChainWalker::CheckMarksAt(uint64_t sequence, const crypto::Sha256Digest& hash) {
  while (!marks_.empty() && marks_.front().checkpoint.sequence == sequence) {
    const Mark m = std::move(marks_.front());
    marks_.erase(marks_.begin());
    if (m.checkpoint.hash != hash) {
      // Every record up to here verified link by link, so whoever changed one rewrote all the
      // hashes after it; only a checkpoint kept elsewhere shows that.
      return Fail(sequence, "record " + std::to_string(sequence) +
                                ": chain hash does not match the " + m.label + " (records up to " +
                                std::to_string(sequence) + " altered and rehashed)");
    }
    ++report_.checkpoints_matched;
    if (m.label == kExternalLabel)
      report_.message = "; matches the checkpoint at " + std::to_string(sequence);
  }
  return true;
}

bool ChainWalker::Feed(uint64_t key, std::string_view stored) {
  if (!report_.ok) return false;
  if (last_ == start_ && !CheckMarksAt(start_, last_hash_)) return false;
  const uint64_t expected = last_ + 1;
  const std::string n = std::to_string(key);
  if (key < expected) {
    // Keys come in increasing order, so this is a record stored below the anchor.
    return Fail(key, "record " + n + " precedes the anchor at " + std::to_string(start_));
  }
  if (key > expected) {
    return Fail(expected, "sequence gap after " + std::to_string(last_) + ": record " +
                              std::to_string(expected) + " missing");
  }
  auto decoded = DecodeTrailRecord(stored);
  if (!decoded.ok()) {
    return Fail(key, "record " + n + ": unreadable (altered): " + decoded.error().message());
  }
  const uint64_t claimed = decoded->record.sequence;
  if (claimed > key) {
    return Fail(key, "record " + std::to_string(claimed) + " precedes " + n + " (reordered)");
  }
  if (claimed < key) {
    return Fail(key, "record " + n + ": holds a copy of record " + std::to_string(claimed) +
                         " (reordered or replayed)");
  }
  std::optional<std::string> canonical = CanonicalBytes(stored);
  if (!canonical || ChainHash(decoded->prev_hash, *canonical) != decoded->hash) {
    return Fail(key, "record " + n + ": hash mismatch (altered)");
  }
  if (decoded->prev_hash != last_hash_ && last_ == start_) {
    return Fail(key, "record " + n + ": PrevHash does not match " +
                         (start_ == 0 ? std::string("the start of the trail")
                                      : "the position at " + std::to_string(start_)) +
                         " (altered)");
  }
  if (decoded->prev_hash != last_hash_) {
    // Both records are self-consistent but do not link: the predecessor was altered and its hash
    // recomputed (a forger of this record would have copied the right PrevHash).
    return Fail(last_, "record " + std::to_string(last_) + ": altered and rehashed (record " + n +
                           "'s PrevHash does not match its hash)");
  }
  if (report_.first == 0) report_.first = key;
  last_ = key;
  last_hash_ = decoded->hash;
  return CheckMarksAt(key, last_hash_);
}

VerifyReport ChainWalker::Finish(const std::optional<Checkpoint>& head) {
  if (report_.ok && last_ == start_) CheckMarksAt(start_, last_hash_);
  if (report_.ok && head) {
    if (head->sequence < last_) {
      Fail(head->sequence + 1, "trail continues to " + std::to_string(last_) +
                                   " past the head at " + std::to_string(head->sequence) +
                                   " (head rolled back)");
    } else if (head->sequence == last_ && head->hash != last_hash_) {
      Fail(last_, "record " + std::to_string(last_) + ": hash does not match the head");
    } else if (head->sequence > last_) {
      AddCheckpoint(*head, "head");
    }
  }
  if (report_.ok && !marks_.empty()) {
    const Mark& m = marks_.front();  // the earliest position past the end
    Fail(last_ + 1, "trail ends at " + std::to_string(last_) + " but " + m.label + " says " +
                        std::to_string(m.checkpoint.sequence));
  }
  report_.last = last_;
  if (report_.ok) {
    std::string msg;
    if (report_.first == 0) {
      msg = from_anchor_ ? "verified: no records after anchor at " + std::to_string(start_)
                         : std::string("verified: trail is empty");
    } else {
      msg = "verified " + std::to_string(report_.first) + ".." + std::to_string(last_);
      if (from_anchor_) msg += " from anchor at " + std::to_string(start_);
    }
    report_.message = msg + report_.message;  // + "; matches the checkpoint at N", if any
  }
  return report_;
}

}  // namespace kmsfs::keyd
