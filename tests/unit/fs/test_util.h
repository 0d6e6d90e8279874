// Shared helpers for the fs unit tests: deterministic ids, keys and plaintext patterns.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/base/bytes.h"
#include "common/crypto/secret.h"
#include "common/format/block_layout.h"
#include "common/format/ids.h"
#include "fs/core/file_content.h"
#include "tests/fakes/mem_backing_file.h"

namespace kmsfs::fs::testing {

inline format::Id128 IdFromSeed(uint8_t seed) {
  format::Id128 id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(seed * 31 + i + 1);
  return id;
}

// A test-only DEK; never used outside tests.
inline crypto::SecretBytes DekFromSeed(uint8_t seed) {
  crypto::SecretBytes k(32);
  for (size_t i = 0; i < 32; ++i) k.data()[i] = static_cast<uint8_t>(seed * 7 + i);
  return k;
}

// Position-dependent bytes, so a block moved or a byte shifted shows up.
inline Bytes Pattern(size_t len, uint64_t start = 0, uint8_t salt = 0) {
  Bytes b(len);
  for (size_t i = 0; i < len; ++i) {
    const uint64_t p = start + i;
    b[i] = static_cast<uint8_t>((p * 2654435761u >> 13) ^ (p >> 12) ^ salt);
  }
  return b;
}

// A backing file holding a stand-in header page and the empty file's metadata, with the
// FileContent over it (FileContent never reads the header).
struct TestFile {
  explicit TestFile(uint8_t file_seed = 2, uint8_t key_seed = 7, uint8_t volume_seed = 1)
      : volume_id(IdFromSeed(volume_seed)), file_id(IdFromSeed(file_seed)),
        dek(DekFromSeed(key_seed)) {
    mem.RawWrite(0, Bytes(format::kHeaderPageSize, 0x48));
    content = Reopen(&mem);
    KMSFS_CHECK(content->InitializeEmpty().ok());
    mem.ResetCounters();
  }
  // A fresh FileContent for this file over `backing` (the same one, or a wrapper around it).
  std::unique_ptr<FileContent> Reopen(BackingFile* backing) const {
    auto fc = FileContent::Open(volume_id, file_id, dek, backing);
    KMSFS_CHECK(fc.ok());
    return std::move(fc).value();
  }
  Bytes ReadAll() {
    auto size = content->Size();
    KMSFS_CHECK(size.ok());
    Bytes out(*size);
    auto n = content->Read(out, 0);
    KMSFS_CHECK(n.ok() && *n == out.size());
    return out;
  }

  format::Id128 volume_id;
  format::Id128 file_id;
  crypto::SecretBytes dek;
  fakes::MemBackingFile mem;
  std::unique_ptr<FileContent> content;
};

// A fresh /tmp/kmsfs-fs-XXXXXX, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kmsfs-fs-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    KMSFS_CHECK(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace kmsfs::fs::testing
