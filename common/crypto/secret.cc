#include "common/crypto/secret.h"

#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <utility>

namespace kmsfs::crypto {
namespace {

std::atomic<bool> g_require_mlock{false};
std::atomic<bool> g_mlock_failed{false};

size_t PageSize() {
  static const size_t kPage = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return kPage;
}

}  // namespace

void SetRequireMlock(bool require) { g_require_mlock = require; }
bool MlockEverFailed() { return g_mlock_failed; }

// Each secret gets its own page run. Secrets are few (one per open file at most) and small, so the
// page granularity costs little memory and keeps MADV_DONTDUMP/mlock exact without an allocator.
SecretBytes::SecretBytes(size_t size) {
  if (size == 0) return;
  const size_t page = PageSize();
  const size_t len = (size + page - 1) / page * page;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  ::madvise(p, len, MADV_DONTDUMP);
  if (::mlock(p, len) != 0) {
    if (g_require_mlock) {
      std::fprintf(stderr, "kmsfs: mlock of secret memory failed (%s) and --require-mlock is set\n",
                   std::strerror(errno));
      std::abort();
    }
    bool expected = false;
    if (g_mlock_failed.compare_exchange_strong(expected, true)) {
      std::fprintf(stderr,
                   "kmsfs: warning: mlock failed (%s); secrets stay undumpable but may be swapped. "
                   "Raise LimitMEMLOCK/RLIMIT_MEMLOCK.\n",
                   std::strerror(errno));
    }
  }
  data_ = static_cast<uint8_t*>(p);
  size_ = size;
  mapped_ = len;
}

SecretBytes SecretBytes::CopyFrom(std::span<const uint8_t> src) {
  SecretBytes s(src.size());
  if (!src.empty()) std::memcpy(s.data_, src.data(), src.size());
  return s;
}

SecretBytes::~SecretBytes() { Free(); }

SecretBytes::SecretBytes(SecretBytes&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      mapped_(std::exchange(o.mapped_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
  if (this != &o) {
    Free();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    mapped_ = std::exchange(o.mapped_, 0);
  }
  return *this;
}

void SecretBytes::Free() noexcept {
  if (data_ == nullptr) return;
  OPENSSL_cleanse(data_, mapped_);
  ::munlock(data_, mapped_);
  ::munmap(data_, mapped_);
  data_ = nullptr;
  size_ = 0;
  mapped_ = 0;
}

bool ConstantTimeEqual(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void Wipe(std::span<uint8_t> buf) {
  if (!buf.empty()) OPENSSL_cleanse(buf.data(), buf.size());
}

void Wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

Status HardenProcess() {
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return Error::FromErrno("prctl(PR_SET_DUMPABLE)", errno);
  struct rlimit no_core = {0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) return Error::FromErrno("setrlimit(RLIMIT_CORE)", errno);
  return Status::Ok();
}

}  // namespace kmsfs::crypto
