// PolicyCache: each key's compiled policy, parsed once and reused until the policy text changes.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/base/status.h"
#include "keyd/policy/policy.h"

namespace kmsfs::keyd {

// Why: every key use evaluates the key's policy, and parsing a 32 KiB JSON document per request
// would dominate a Decrypt. Entries are keyed by key id and hold the exact text they were
// compiled from (plus its hash for a cheap mismatch test): a lookup hits only when the text read
// from the store in this request's snapshot is byte-for-byte the cached one, so a PutKeyPolicy
// takes effect on the very next request — the cache can never serve a stale policy, Invalidate
// merely frees memory early. Bounded: when `capacity` entries are held, the cache is cleared
// (simple, and re-parsing is only a cost, never a correctness issue).
//
// Thread-safe; mu_ is a leaf lock (parsing happens outside it).
class PolicyCache {
 public:
  explicit PolicyCache(size_t capacity) : capacity_(capacity) {}

  // The compiled form of `policy_text` for `key_id`. An empty text means DefaultKeyPolicy().
  // kInvalidArgument (the parser's message) if the text does not parse.
  Result<CompiledPolicy> Get(const std::string& key_id, std::string_view policy_text);
  void Invalidate(const std::string& key_id);
  size_t size() const;

  PolicyCache(const PolicyCache&) = delete;
  PolicyCache& operator=(const PolicyCache&) = delete;

 private:
  struct Entry {
    size_t hash;
    std::string text;
    CompiledPolicy policy;
  };
  const size_t capacity_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const Entry>> entries_;  // GUARDED_BY(mu_)
};

}  // namespace kmsfs::keyd
