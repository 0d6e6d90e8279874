#include "fs/lifecycle/progress.h"

#include <unistd.h>

#include <cmath>

namespace kmsfs::fs::lifecycle {
namespace {

std::string Duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<uint64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%llu:%02llu:%02llu", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s / 60 % 60),
                  static_cast<unsigned long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%llu:%02llu", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  }
  return buf;
}

}  // namespace

Progress::Progress(std::string what, std::string unit, FILE* stream)
    : what_(std::move(what)),
      unit_(std::move(unit)),
      stream_(stream),
      tty_(::isatty(::fileno(stream)) == 1),
      start_(std::chrono::steady_clock::now()) {}

std::string Progress::Line(uint64_t done, uint64_t total, uint64_t failed, double seconds,
                           const std::string& unit) {
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  std::string eta = "?";
  if (done >= total) {
    eta = "0:00";
  } else if (rate > 0) {
    eta = Duration(static_cast<double>(total - done) / rate);
  }
  char buf[160];
  std::snprintf(buf, sizeof(buf), "%llu/%llu %s  %.1f %s/s  ETA %s",
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                unit.c_str(), rate, unit.c_str(), eta.c_str());
  std::string line = buf;
  if (failed > 0) line += "  (" + std::to_string(failed) + " failed)";
  return line;
}

void Progress::Update(uint64_t done, uint64_t total, uint64_t failed) {
  const auto now = std::chrono::steady_clock::now();
  const auto every = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
  if (printed_ && now - last_ < every) return;
  if (!printed_ && !tty_ && now - start_ < every) return;
  last_ = now;
  Print(done, total, failed, false);
}

void Progress::Finish(uint64_t done, uint64_t total, uint64_t failed) {
  Print(done, total, failed, true);
}

void Progress::Print(uint64_t done, uint64_t total, uint64_t failed, bool final) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::string line = Line(done, total, failed, seconds, unit_);
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = total == 0 ? kWidth : static_cast<int>(kWidth * done / total);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, ' ');
    std::fprintf(stream_, "\r\033[K%s [%s] %s%s", what_.c_str(), bar.c_str(), line.c_str(),
                 final ? "\n" : "");
  } else {
    std::fprintf(stream_, "%s: %s\n", what_.c_str(), line.c_str());
  }
  std::fflush(stream_);
  printed_ = true;
}

}  // namespace kmsfs::fs::lifecycle
