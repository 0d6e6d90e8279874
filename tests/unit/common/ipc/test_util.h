// Helpers for the ipc unit tests: short private temp dirs (sun_path is 108 bytes) and timing.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <string>

namespace kmsfs::ipc::testing {

// A fresh /tmp/kmsfs-ipc-XXXXXX, removed with its contents on destruction. Short on purpose.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kmsfs-ipc-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    path_ = made != nullptr ? made : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Milliseconds since `start` on the monotonic clock.
inline long long MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

}  // namespace kmsfs::ipc::testing
