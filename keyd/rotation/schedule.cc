#include "keyd/rotation/schedule.h"

#include <algorithm>
#include <limits>
#include <tuple>

namespace kmsfs::keyd {
namespace {

constexpr uint32_t kStoreMaxRotationDays = 2560;  // ValidateKeyRecord's ceiling

Error Invalid(std::string msg) { return Error(Code::kInvalidArgument, std::move(msg)); }

// a + b, saturating: a far-future date must not wrap into the past.
int64_t AddSaturating(int64_t a, int64_t b) {
  if (b > 0 && a > std::numeric_limits<int64_t>::max() - b) {
    return std::numeric_limits<int64_t>::max();
  }
  return a + b;
}

Result<uint32_t> Choose(std::optional<int64_t> requested, uint32_t def, uint32_t lo, uint32_t hi,
                        const char* field) {
  const int64_t v = requested.value_or(def);
  if (v < lo || v > hi) {
    return Invalid(std::string(field) + " must be an integer from " + std::to_string(lo) + " to " +
                   std::to_string(hi));
  }
  return static_cast<uint32_t>(v);
}

}  // namespace

Status ValidateScheduleOptions(const ScheduleOptions& o) {
  if (o.min_rotation_period_days < 1 || o.max_rotation_period_days > kStoreMaxRotationDays ||
      o.min_rotation_period_days > o.max_rotation_period_days) {
    return Invalid("rotation period range must lie within 1..2560 days with min <= max");
  }
  if (o.default_rotation_period_days < o.min_rotation_period_days ||
      o.default_rotation_period_days > o.max_rotation_period_days) {
    return Invalid("the default rotation period must lie within the allowed range");
  }
  if (o.rotation_day_seconds < 1) return Invalid("rotation_day_seconds must be at least 1");
  if (o.deletion_day_seconds < 1) return Invalid("deletion_day_seconds must be at least 1");
  if (o.min_pending_window_days > o.max_pending_window_days ||
      o.max_pending_window_days > 365 * 100) {
    return Invalid("pending deletion window range must have min <= max");
  }
  if (o.default_pending_window_days < o.min_pending_window_days ||
      o.default_pending_window_days > o.max_pending_window_days) {
    return Invalid("the default pending deletion window must lie within the allowed range");
  }
  return Status::Ok();
}

Result<uint32_t> ChooseRotationPeriod(std::optional<int64_t> requested, const ScheduleOptions& o) {
  return Choose(requested, o.default_rotation_period_days, o.min_rotation_period_days,
                o.max_rotation_period_days, "RotationPeriodInDays");
}

Result<uint32_t> ChoosePendingWindow(std::optional<int64_t> requested, const ScheduleOptions& o) {
  return Choose(requested, o.default_pending_window_days, o.min_pending_window_days,
                o.max_pending_window_days, "PendingWindowInDays");
}

int64_t NextRotationDate(int64_t from, uint32_t period_days, const ScheduleOptions& o) {
  return AddSaturating(from, static_cast<int64_t>(period_days) * o.rotation_day_seconds);
}

int64_t DeletionDate(int64_t now, uint32_t window_days) {
  return AddSaturating(now, static_cast<int64_t>(window_days) * kSecondsPerDay);
}

int64_t DeletionDate(int64_t now, uint32_t window_days, const ScheduleOptions& o) {
  return AddSaturating(now, static_cast<int64_t>(window_days) * o.deletion_day_seconds);
}

bool RotationDue(const KeyRecord& key, int64_t now) {
  return key.key_state == KeyState::kEnabled && key.rotation_enabled &&
         key.next_rotation_date.has_value() && *key.next_rotation_date <= now;
}

bool DeletionDue(const KeyRecord& key, int64_t now) {
  return key.key_state == KeyState::kPendingDeletion && key.deletion_date.has_value() &&
         *key.deletion_date <= now;
}

int64_t NextRotationAfterScheduledRotation(const KeyRecord& key, int64_t now,
                                           const ScheduleOptions& o) {
  return NextRotationDate(now, key.rotation_period_in_days, o);
}

ScheduledWorkPlan PlanScheduledWork(std::span<const KeyRecord> keys, int64_t now,
                                    size_t max_actions) {
  std::vector<std::pair<int64_t, std::string>> destroy, rotate;
  for (const KeyRecord& k : keys) {
    if (DeletionDue(k, now)) destroy.emplace_back(*k.deletion_date, k.key_id);
    if (RotationDue(k, now)) rotate.emplace_back(*k.next_rotation_date, k.key_id);
  }
  std::sort(destroy.begin(), destroy.end());
  std::sort(rotate.begin(), rotate.end());
  destroy.erase(std::unique(destroy.begin(), destroy.end()), destroy.end());
  rotate.erase(std::unique(rotate.begin(), rotate.end()), rotate.end());
  ScheduledWorkPlan plan;
  for (auto& [due, id] : destroy) {
    if (plan.destroy.size() >= max_actions) break;
    plan.destroy.push_back(std::move(id));
  }
  for (auto& [due, id] : rotate) {
    if (plan.destroy.size() + plan.rotate.size() >= max_actions) break;
    plan.rotate.push_back(std::move(id));
  }
  return plan;
}

}  // namespace kmsfs::keyd
