#include "keyd/server/systemd_notify.h"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <string>

namespace kmsfs::keyd {
namespace {

// unset_environment = 0 everywhere: the variables must survive for later notifications, and keyd
// never execs anything that could inherit them.
bool Send(const std::string& state) { return ::sd_notify(0, state.c_str()) > 0; }

// STATUS= is one line; a stray newline would start a new (unintended) assignment.
std::string OneLine(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

}  // namespace

bool NotifyReady(std::string_view status) { return Send("READY=1\nSTATUS=" + OneLine(status)); }

bool NotifyStopping() { return Send("STOPPING=1\nSTATUS=stopping"); }

bool NotifyStatus(std::string_view status) { return Send("STATUS=" + OneLine(status)); }

bool NotifyWatchdog() { return Send("WATCHDOG=1"); }

std::chrono::microseconds WatchdogInterval() {
  uint64_t usec = 0;
  if (::sd_watchdog_enabled(0, &usec) <= 0) return std::chrono::microseconds(0);
  return std::chrono::microseconds(usec);
}

}  // namespace kmsfs::keyd
