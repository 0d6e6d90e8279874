#include "keyd/audit/journal_emitter.h"

#include <systemd/sd-journal.h>

#include <chrono>
#include <cinttypes>
#include <utility>

#include "common/log/log.h"

namespace kmsfs::keyd {
namespace {

constexpr size_t kBatch = 256;
constexpr auto kPollInterval = std::chrono::seconds(1);

}  // namespace

JournalEmitter::JournalEmitter(Reader reader, uint64_t start_after)
    : reader_(std::move(reader)), cursor_(start_after), thread_([this] { Run(); }) {}

JournalEmitter::~JournalEmitter() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void JournalEmitter::Notify() {
  {
    std::lock_guard lock(mu_);
    pending_ = true;
  }
  cv_.notify_one();
}

int JournalEmitter::Send(const TrailRecord& t) {
  const AuditRecord& r = t.record;
  const std::string hash = DigestHex(t.hash);
  // Every value goes through "%s"/%PRIu64, never as a format, so a path with '%' is just text.
  return sd_journal_send(
      "MESSAGE=kmsfs audit %" PRIu64 ": %s key %s by uid %u: %s", r.sequence, r.operation.c_str(),
      r.key_id.empty() ? "-" : r.key_id.c_str(), static_cast<unsigned>(r.principal.uid),
      r.outcome.c_str(), "PRIORITY=6", "KMSFS_AUDIT_SEQ=%" PRIu64, r.sequence, "KMSFS_KEY_ID=%s",
      r.key_id.c_str(), "KMSFS_OPERATION=%s", r.operation.c_str(), "KMSFS_UID=%u",
      static_cast<unsigned>(r.principal.uid), "KMSFS_PATH=%s", r.path.c_str(), "KMSFS_OUTCOME=%s",
      r.outcome.c_str(), "KMSFS_AUDIT_HASH=%s", hash.c_str(), nullptr);
}

void JournalEmitter::Run() {
  bool warned = false;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, kPollInterval, [this] { return pending_ || stop_; });
      if (stop_) return;
      pending_ = false;
    }
    for (;;) {
      auto batch = reader_(cursor_, kBatch);
      if (!batch.ok()) {
        if (!warned) {
          log::Get("keyd.audit")
              ->warn("audit journal copy: cannot read the trail: {}", batch.error().ToString());
          warned = true;
        }
        break;
      }
      for (const TrailRecord& t : *batch) {
        const int rc = Send(t);
        if (rc < 0 && !warned) {
          log::Get("keyd.audit")
              ->warn(
                  "audit journal copy: sd_journal_send failed (errno {}); "
                  "the LMDB trail is unaffected",
                  -rc);
          warned = true;
        }
        cursor_ = t.record.sequence;
      }
      if (batch->size() < kBatch) break;
      std::lock_guard lock(mu_);
      if (stop_) return;
    }
  }
}

}  // namespace kmsfs::keyd
