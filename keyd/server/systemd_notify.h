// How keyd talks to its service manager: sd_notify READY/STOPPING/STATUS/WATCHDOG, nothing more.
#pragma once

#include <chrono>
#include <string_view>

namespace kmsfs::keyd {

// Each call is a no-op returning false when $NOTIFY_SOCKET is unset (keyd run by hand, or under a
// Type=simple unit), so callers never need to know whether systemd is there. Thread-safe.

// READY=1 plus STATUS=<status>. Send only once keyd really serves: store open, root key verified,
// socket listening (STYLE.md principle 12) — Type=notify units order dependants after it.
bool NotifyReady(std::string_view status);
// STOPPING=1: graceful shutdown began (no new connections; in-flight requests finish).
bool NotifyStopping();
bool NotifyStatus(std::string_view status);
// WATCHDOG=1 keep-alive.
bool NotifyWatchdog();

// How often WATCHDOG=1 must be sent: the unit's WatchdogSec= (from $WATCHDOG_USEC, if it is meant
// for this pid), or zero when the watchdog is off.
std::chrono::microseconds WatchdogInterval();

}  // namespace kmsfs::keyd
