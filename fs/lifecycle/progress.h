// Progress: the count / rate / ETA line of long-running maintenance commands (rewrap, reencrypt).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace kmsfs::fs::lifecycle {

// On a terminal (isatty of the stream's fd) it redraws one line with a bar, at most 10 times a
// second; otherwise it prints a plain line every 5 seconds, so logs and pipes stay readable.
// Not thread-safe: callers serialize Update (rewrap calls it under its result lock).
class Progress {
 public:
  // `what` prefixes every line ("rewrap"); `unit` names the counted things ("files").
  Progress(std::string what, std::string unit, FILE* stream);
  void Update(uint64_t done, uint64_t total, uint64_t failed);
  // Prints the final line (and ends the terminal line).
  void Finish(uint64_t done, uint64_t total, uint64_t failed);

  // "12/100 files  3.5 files/s  ETA 0:25" — exposed for tests.
  static std::string Line(uint64_t done, uint64_t total, uint64_t failed, double seconds,
                          const std::string& unit);

 private:
  void Print(uint64_t done, uint64_t total, uint64_t failed, bool final);
  const std::string what_;
  const std::string unit_;
  FILE* const stream_;
  const bool tty_;
  const std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_{};
  bool printed_ = false;
};

}  // namespace kmsfs::fs::lifecycle
