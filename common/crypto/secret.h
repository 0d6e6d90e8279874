// SecretBytes and SecretKey<Tag>: the one owner of key material — locked, undumpable, wiped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/base/status.h"

namespace kmsfs::crypto {

// A fixed-size buffer of secret bytes. Storage comes from mmap'ed pages that are mlock'ed
// (best effort; see SetRequireMlock) and marked MADV_DONTDUMP; the bytes are wiped with
// OPENSSL_cleanse before the pages are returned. Move-only; never printable; compare with
// ConstantTimeEqual. Thread-compatible (one owner at a time).
class SecretBytes {
 public:
  SecretBytes() = default;
  // Zero-filled secret of `size` bytes. Aborts on allocation failure (as new would throw).
  explicit SecretBytes(size_t size);
  // Copies `src` into locked memory. The caller wipes its own copy.
  static SecretBytes CopyFrom(std::span<const uint8_t> src);
  ~SecretBytes();
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  SecretBytes(SecretBytes&& o) noexcept;
  SecretBytes& operator=(SecretBytes&& o) noexcept;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  std::span<uint8_t> mutable_span() { return {data_, size_}; }
  // An explicit, greppable deep copy (copies are rare and deliberate).
  SecretBytes Clone() const { return CopyFrom(span()); }

 private:
  void Free() noexcept;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;  // bytes mapped (page multiple), 0 when empty
};

// Constant-time equality (CRYPTO_memcmp). Different sizes compare unequal.
bool ConstantTimeEqual(std::span<const uint8_t> a, std::span<const uint8_t> b);

// Zeroes `buf` in a way the compiler cannot elide (OPENSSL_cleanse).
void Wipe(std::span<uint8_t> buf);
void Wipe(std::string& s);

// A secret of exactly kSize bytes whose purpose is part of its type: a DEK cannot be passed where
// a master key is expected. Tags are empty structs carrying `static constexpr size_t kSize`.
template <class Tag>
class SecretKey {
 public:
  static constexpr size_t kSize = Tag::kSize;
  SecretKey() : bytes_(kSize) {}
  // Takes ownership; returns kInvalidArgument if the size is wrong.
  static Result<SecretKey> FromBytes(SecretBytes bytes) {
    if (bytes.size() != kSize) return Error(Code::kInvalidArgument, "key has the wrong length");
    SecretKey k(0);
    k.bytes_ = std::move(bytes);
    return k;
  }
  SecretKey(SecretKey&&) noexcept = default;
  SecretKey& operator=(SecretKey&&) noexcept = default;
  SecretKey(const SecretKey&) = delete;
  SecretKey& operator=(const SecretKey&) = delete;

  std::span<const uint8_t> span() const { return bytes_.span(); }
  std::span<uint8_t> mutable_span() { return bytes_.mutable_span(); }
  const SecretBytes& bytes() const { return bytes_; }
  SecretKey Clone() const {
    SecretKey k(0);
    k.bytes_ = bytes_.Clone();
    return k;
  }
  friend bool operator==(const SecretKey& a, const SecretKey& b) {
    return ConstantTimeEqual(a.span(), b.span());
  }

 private:
  explicit SecretKey(int /*empty*/) {}
  SecretBytes bytes_;
};

struct RootKeyTag { static constexpr size_t kSize = 32; };
struct MasterKeyTag { static constexpr size_t kSize = 32; };
struct DekTag { static constexpr size_t kSize = 32; };
struct NameKeyTag { static constexpr size_t kSize = 32; };
using RootKey = SecretKey<RootKeyTag>;
using MasterKey = SecretKey<MasterKeyTag>;
using Dek = SecretKey<DekTag>;
using NameKey = SecretKey<NameKeyTag>;

// If true, a failed mlock is fatal (abort) instead of a one-time warning. Default false.
void SetRequireMlock(bool require);
// Whether any SecretBytes allocation has failed to mlock so far (for a startup warning).
bool MlockEverFailed();

// Process hardening for key holders: not dumpable (PR_SET_DUMPABLE 0, which also blocks ptrace by
// non-root and /proc/PID/mem), core size 0. Call first thing in main(). Returns the first failure.
Status HardenProcess();

}  // namespace kmsfs::crypto
