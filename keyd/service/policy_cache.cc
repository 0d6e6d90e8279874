#include "keyd/service/policy_cache.h"

#include <functional>
#include <utility>

namespace kmsfs::keyd {

Result<CompiledPolicy> PolicyCache::Get(const std::string& key_id, std::string_view policy_text) {
  static const std::string kDefault = DefaultKeyPolicy();
  if (policy_text.empty()) policy_text = kDefault;
  const size_t hash = std::hash<std::string_view>{}(policy_text);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key_id);
    if (it != entries_.end() && it->second->hash == hash && it->second->text == policy_text) {
      return it->second->policy;
    }
  }
  KMSFS_ASSIGN_OR_RETURN(CompiledPolicy compiled, CompiledPolicy::Parse(policy_text));
  auto entry = std::make_shared<const Entry>(Entry{hash, std::string(policy_text), compiled});
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.size() >= capacity_ && entries_.find(key_id) == entries_.end()) entries_.clear();
  entries_[key_id] = std::move(entry);
  return compiled;
}

void PolicyCache::Invalidate(const std::string& key_id) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(key_id);
}

size_t PolicyCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace kmsfs::keyd
