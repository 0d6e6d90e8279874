// Rotation and deletion schedules: pure decisions about when a key rotates or is destroyed.
//
// No I/O and no clock of its own: callers pass `now` (unix seconds) and key records read from
// KeyStore; the service applies the decisions (KeyStore::AddVersion / DestroyKey) and re-checks
// them inside the write transaction with the same functions, so two schedulers (or a scheduler
// and an administrator) racing on one key cannot rotate it twice for one due date.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "keyd/store/records.h"

namespace kmsfs::keyd {

inline constexpr int64_t kSecondsPerDay = 86400;

// The ranges an administrator may choose from, and the defaults. AWS KMS values by default.
struct ScheduleOptions {
  // EnableKeyRotation's RotationPeriodInDays. AWS allows 90..2560; tests may lower the minimum
  // (down to 1, the store's floor). max may not exceed 2560 (the store's ceiling).
  uint32_t min_rotation_period_days = 90;
  uint32_t max_rotation_period_days = 2560;
  uint32_t default_rotation_period_days = 365;
  // TEST ONLY: how many seconds one rotation "day" lasts. 86400 in production. With 1, a key with
  // RotationPeriodInDays = 2 rotates every two seconds — the acceptance test "keys gain versions
  // on schedule" runs in seconds this way. The stored RotationPeriodInDays keeps its number; only
  // the computed NextRotationDate uses this unit. Never set it on a production keyd.
  int64_t rotation_day_seconds = kSecondsPerDay;
  // ScheduleKeyDeletion's PendingWindowInDays. AWS allows 7..30; tests may set min to 0 (delete
  // at the next scheduler run). Deletion days are always real days (86400 s).
  uint32_t min_pending_window_days = 7;
  uint32_t max_pending_window_days = 30;
  uint32_t default_pending_window_days = 30;
  // TEST ONLY: how many seconds one pending-window "day" lasts (ScheduleKeyDeletion and
  // RetireKeyVersion), 86400 in production. With 1, a 7-day window ends after 7 seconds, so an
  // integration test can watch crypto-shredding happen. Never set it on a production keyd.
  int64_t deletion_day_seconds = kSecondsPerDay;
};

// kInvalidArgument naming the inconsistent field (min > max, default outside [min, max], a
// rotation period outside 1..2560, rotation_day_seconds < 1). For startup checks.
Status ValidateScheduleOptions(const ScheduleOptions& o);

// The period to store for a request: `requested` (or the default when nullopt) if within
// [min, max]; else kInvalidArgument "RotationPeriodInDays must be an integer from MIN to MAX".
Result<uint32_t> ChooseRotationPeriod(std::optional<int64_t> requested, const ScheduleOptions& o);
// Likewise for PendingWindowInDays.
Result<uint32_t> ChoosePendingWindow(std::optional<int64_t> requested, const ScheduleOptions& o);

// When a key whose rotation was enabled (or last rotated) at `from` rotates next.
int64_t NextRotationDate(int64_t from, uint32_t period_days, const ScheduleOptions& o);
// When a key scheduled for deletion at `now` with `window_days` is destroyed.
int64_t DeletionDate(int64_t now, uint32_t window_days);
// The same with the (TEST-ONLY) day length of `o.deletion_day_seconds`.
int64_t DeletionDate(int64_t now, uint32_t window_days, const ScheduleOptions& o);

// Due now? Rotation: Enabled, rotation on, NextRotationDate <= now. Disabled keys do not rotate
// (nothing can use them); they rotate at the first run after being re-enabled. Deletion:
// PendingDeletion and DeletionDate <= now.
bool RotationDue(const KeyRecord& key, int64_t now);
bool DeletionDue(const KeyRecord& key, int64_t now);

// The NextRotationDate to store when a due key rotates at `now`. A keyd that was down for several
// periods rotates once and restarts the period from now — it does not catch up with a burst of
// versions that would all be created at the same instant.
int64_t NextRotationAfterScheduledRotation(const KeyRecord& key, int64_t now,
                                           const ScheduleOptions& o);

// What one scheduler run does: key ids to destroy (first: revocation matters more than
// freshness), then to rotate, each list ordered by due date (oldest first, then key id), at most
// `max_actions` in total; the rest waits for the next run. Keys not due are skipped.
struct ScheduledWorkPlan {
  std::vector<std::string> destroy;
  std::vector<std::string> rotate;
};
ScheduledWorkPlan PlanScheduledWork(std::span<const KeyRecord> keys, int64_t now,
                                    size_t max_actions);

}  // namespace kmsfs::keyd
