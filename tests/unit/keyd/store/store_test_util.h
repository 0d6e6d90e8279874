// Test helpers for keyd/store: private temp dirs, deterministic test-only root keys, file hashing.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include "common/base/bytes.h"
#include "common/crypto/hash.h"
#include "common/crypto/secret.h"
#include "tests/catch.h"

namespace kmsfs::keyd::testing {

// A fresh directory /tmp/kmsfs-store-XXXXXX (mode 0700 from mkdtemp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kmsfs-store-XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    REQUIRE(p != nullptr);
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    // Make everything removable again even if a test took permissions away.
    for (auto& e : std::filesystem::recursive_directory_iterator(path_, ec)) {
      if (e.is_directory(ec)) ::chmod(e.path().c_str(), 0700);
    }
    ::chmod(path_.c_str(), 0700);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Test-only root key whose 32 bytes are all `seed` (never used outside tests).
inline crypto::RootKey TestRootKey(uint8_t seed) {
  crypto::RootKey k;
  for (auto& b : k.mutable_span()) b = seed;
  return k;
}

inline std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void WriteFileBytes(const std::string& path, std::string_view bytes, mode_t mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    REQUIRE(out.good());
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
  }
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

inline std::string Sha256Hex(const std::string& path) {
  const std::string data = ReadFileBytes(path);
  return HexEncode(crypto::Sha256(AsBytes(data)));
}

inline mode_t ModeOf(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// A settable clock for KeyStore::Options::clock.
struct FakeClock {
  std::atomic<int64_t> now{1'700'000'000};
  std::function<int64_t()> Fn() {
    return [this] { return now.load(); };
  }
};

}  // namespace kmsfs::keyd::testing
