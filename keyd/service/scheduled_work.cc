// KmsService::RunScheduledWork: applies the rotation module's plan — automatic rotations and the
// destruction of keys whose deletion window has passed (crypto-shredding).
#include <set>
#include <utility>

#include "common/log/log.h"
#include "keyd/service/service_impl.h"

namespace kmsfs::keyd {
namespace {

std::shared_ptr<spdlog::logger> Log() {
  static const std::shared_ptr<spdlog::logger> kLogger = log::Get("keyd.service");
  return kLogger;
}

}  // namespace

KmsService::ScheduledWorkReport KmsService::Impl::RunScheduledWork(int64_t now) {
  ScheduledWorkReport report;
  auto due_rotation = store_->KeysDueForRotation(now);
  auto due_deletion = store_->KeysDueForDeletion(now);
  if (!due_rotation.ok() || !due_deletion.ok()) {
    const Error& e = due_rotation.ok() ? due_deletion.error() : due_rotation.error();
    Log()->error("scheduled work: cannot list due keys: {}", e.ToString());
    report.failed.push_back("store: " + e.message());
    return report;
  }
  std::set<std::string> ids(due_rotation->begin(), due_rotation->end());
  ids.insert(due_deletion->begin(), due_deletion->end());
  std::vector<KeyRecord> records;
  for (const std::string& id : ids) {
    auto key = store_->GetKey(id);
    if (key.ok()) records.push_back(std::move(*key));
  }
  const ScheduledWorkPlan plan =
      PlanScheduledWork(records, now, options_.max_scheduled_actions_per_run);

  auto new_event = [&](const char* operation, const std::string& key_id) {
    AuditEvent ev;
    ev.mode = AuditEvent::Mode::kAlways;
    ev.record.operation = operation;
    ev.record.principal = SelfPrincipal();
    ev.record.key_id = key_id;
    return ev;
  };
  // Records the outcome; false if the trail failed (the action is then reported as failed).
  auto finish = [&](AuditEvent& ev, const Status& s) {
    if (!s.ok()) ev.recorded_in_txn = false;
    const ServiceReply err = s.ok() ? ServiceReply{} : ReplyForError(s.error());
    const bool audited =
        FinishAudit(ev, s.ok() ? std::string_view("Success") : err.error_name, err.error_message);
    if (!s.ok() || !audited || ev.txn_audit_failed) {
      report.failed.push_back(
          ev.record.key_id + ": " + ev.record.operation + " " +
          (s.ok() ? std::string("audit trail unavailable") : s.error().message()));
      return false;
    }
    return true;
  };

  // Destruction first: revocation matters more than freshness.
  for (const std::string& id : plan.destroy) {
    AuditEvent ev = new_event("DeleteKey", id);
    std::string versions;
    if (auto vs = store_->ListVersions(id); vs.ok() && !vs->empty()) {
      versions = " (versions 1-" + std::to_string(vs->back().version) + ")";
    }
    ev.record.detail = "scheduled deletion: all key material destroyed" + versions +
                       "; data encrypted under the key can no longer be decrypted";
    Status s = store_->DestroyKey(id, AuditHook(ev));
    if (finish(ev, s)) {
      policies_.Invalidate(id);
      report.destroyed.push_back(id);
      Log()->warn("key {} destroyed: its deletion date passed{}", id, versions);
    }
  }

  // Retired key versions whose waiting period passed (RetireKeyVersion), in what is left of
  // this run's budget.
  const size_t used = plan.destroy.size() + plan.rotate.size();
  if (used < options_.max_scheduled_actions_per_run) {
    DestroyDueVersions(now, options_.max_scheduled_actions_per_run - used, report);
  }

  for (const std::string& id : plan.rotate) {
    AuditEvent ev = new_event("RotateKey", id);
    bool not_due = false;
    auto version = store_->AddVersion(
        id, RotationType::kAutomatic,
        [&](KeyRecord& k) -> Status {
          // Re-decided inside the write transaction: another run (or a concurrent change) may
          // have rotated, disabled or rescheduled the key since the plan was made.
          if (!RotationDue(k, now)) {
            not_due = true;
            return Error(Code::kFailedPrecondition, "no longer due");
          }
          k.next_rotation_date = NextRotationAfterScheduledRotation(k, now, options_);
          ev.record.key_version = k.primary_version;
          ev.record.detail = "scheduled rotation: version " + std::to_string(k.primary_version) +
                             " (AUTOMATIC) is now primary; next rotation at " +
                             FormatUtc(*k.next_rotation_date);
          return Status::Ok();
        },
        AuditHook(ev));
    if (!version.ok() && not_due) continue;  // nothing happened, nothing to record
    if (finish(ev, version.status())) {
      report.rotated.push_back(id);
      Log()->info("key {} rotated on schedule: version {} is primary", id, *version);
    }
  }
  return report;
}

}  // namespace kmsfs::keyd
