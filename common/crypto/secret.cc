#include "common/crypto/secret.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace kmsfs::crypto {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kUnderAsan = true;
#else
constexpr bool kUnderAsan = false;
#endif
#else
constexpr bool kUnderAsan = false;
#endif

std::atomic<bool> g_require_mlock{false};
std::atomic<bool> g_mlock_failed{false};

size_t PageSize() {
  static const size_t kPage = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return kPage;
}

// mlock, with the policy of SetRequireMlock: abort when it is required, otherwise warn once.
// Returns whether the range is locked.
bool LockOrWarn(void* p, size_t len) {
  if (::mlock(p, len) == 0) return true;
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
  return false;
}

// mmap + MADV_DONTDUMP + MADV_WIPEONFORK + mlock of `len` bytes (a page multiple). Aborts when
// the memory cannot be had (as new would throw), and when mlock fails under
// SetRequireMlock(true). *locked says whether mlock succeeded.
// WIPEONFORK: a forked child (libfuse forks to run fusermount3; `kmsfs mount` forks to
// daemonize) must not inherit live secrets into memory that, in the child, is no longer locked
// (mlock is not inherited across fork). In the child these pages read as zeros.
void* MapLocked(size_t len, bool* locked) {
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  ::madvise(p, len, MADV_DONTDUMP);
  ::madvise(p, len, MADV_WIPEONFORK);
  *locked = LockOrWarn(p, len);
  return p;
}

// Small secrets (keys, derived keys, a DEK's plaintext: 16..1024 bytes) come from a pool of
// locked, undumpable chunks instead of a page run each. Why: a page run per secret is five
// syscalls (mmap, madvise, mlock, munlock, munmap) and, in a multi-threaded process, an mm-wide
// lock plus a TLB shootdown on every munmap; keyd makes three or four secrets per Decrypt, and
// profiling showed these syscalls taking ~29 % of its CPU at 8 clients. Pooled slots keep every
// property that mattered: the memory is locked and MADV_DONTDUMP from the start, a slot is wiped
// (OPENSSL_cleanse) the moment its secret is freed, and it holds nothing until it is handed out
// again. Chunks are never unmapped, so the pool stays at the peak number of live small secrets
// (64 KiB chunks; a DEK uses 64 bytes here instead of a 4 KiB page). Larger secrets keep their
// own page run.
class SecretPool {
 public:
  static constexpr std::array<size_t, 3> kSlotSizes = {64, 256, 1024};
  static constexpr size_t kChunkBytes = 64 * 1024;

  // The slot size for `size`, or 0 if it is too large for the pool.
  static size_t SlotFor(size_t size) {
    // Under ASan every secret keeps its own pages, so a use after free faults on the unmapped
    // page instead of reading a recycled slot.
    if (kUnderAsan) return 0;
    for (size_t s : kSlotSizes) {
      if (size <= s) return s;
    }
    return 0;
  }

  // A zero-filled slot of exactly `slot` bytes (a value of kSlotSizes).
  uint8_t* Take(size_t slot) {
    Class& c = ClassOf(slot);
    std::lock_guard lock(mu_);
    if (c.free.empty()) {
      bool locked = false;
      auto* chunk = static_cast<uint8_t*>(MapLocked(kChunkBytes, &locked));
      chunks_.reserve(chunks_.size() + 1);
      chunks_.push_back(Chunk{chunk, locked});
      c.slots += kChunkBytes / slot;
      c.free.reserve(c.slots);  // room for every slot of the class: Give never allocates
      for (size_t off = kChunkBytes; off >= slot; off -= slot) c.free.push_back(chunk + off - slot);
    }
    uint8_t* p = c.free.back();
    c.free.pop_back();
    return p;
  }

  // Locks every chunk that is not locked yet: one that failed to lock before
  // SetRequireMlock(true) (which then aborts here rather than hand out unlocked slots later), and
  // all of them in a forked child, where no lock survives fork.
  void LockAll() {
    std::lock_guard lock(mu_);
    LockAllLocked();
  }

  // fork() handlers (pthread_atfork): the pool's mutex is held across fork so that the child
  // never inherits it locked by a thread that does not exist there; the child then re-locks
  // its chunks (their contents read as zeros there: MADV_WIPEONFORK).
  void BeforeFork() { mu_.lock(); }
  void AfterForkParent() { mu_.unlock(); }
  void AfterForkChild() {
    for (Chunk& c : chunks_) c.locked = false;
    LockAllLocked();
    mu_.unlock();
  }

  // Wipes the slot and makes it available again.
  void Give(uint8_t* p, size_t slot) noexcept {
    OPENSSL_cleanse(p, slot);
    Class& c = ClassOf(slot);
    std::lock_guard lock(mu_);
    c.free.push_back(p);  // within the capacity Take reserved: no allocation, cannot throw
  }

 private:
  void LockAllLocked() {
    for (Chunk& c : chunks_) {
      if (!c.locked) c.locked = LockOrWarn(c.base, kChunkBytes);
    }
  }

  struct Chunk {
    uint8_t* base;
    bool locked;
  };
  struct Class {
    std::vector<uint8_t*> free;  // GUARDED_BY(mu_)
    size_t slots = 0;            // GUARDED_BY(mu_); slots of all chunks of this class
  };
  Class& ClassOf(size_t slot) {
    for (size_t i = 0; i < kSlotSizes.size(); ++i) {
      if (kSlotSizes[i] == slot) return classes_[i];
    }
    std::abort();  // not a pool slot size: a bug in SecretBytes
  }

  std::mutex mu_;
  std::array<Class, kSlotSizes.size()> classes_;
  std::vector<Chunk> chunks_;  // GUARDED_BY(mu_); never shrinks
};

SecretPool& Pool() {
  // Never destroyed: secrets in static objects may be freed after other statics are gone.
  static SecretPool* const kPool = [] {
    auto* pool = new SecretPool();
    ::pthread_atfork([] { Pool().BeforeFork(); }, [] { Pool().AfterForkParent(); },
                     [] { Pool().AfterForkChild(); });
    return pool;
  }();
  return *kPool;
}

}  // namespace

void SetRequireMlock(bool require) {
  g_require_mlock = require;
  if (require) Pool().LockAll();
}
bool MlockEverFailed() { return g_mlock_failed; }

// `mapped_` says where the bytes live: a pool slot (mapped_ = the slot size, below a page) or a
// page run of its own (mapped_ = its length, a page multiple).
SecretBytes::SecretBytes(size_t size) {
  if (size == 0) return;
  if (const size_t slot = SecretPool::SlotFor(size); slot != 0 && slot < PageSize()) {
    data_ = Pool().Take(slot);
    size_ = size;
    mapped_ = slot;
    return;
  }
  const size_t page = PageSize();
  const size_t len = (size + page - 1) / page * page;
  bool locked = false;
  data_ = static_cast<uint8_t*>(MapLocked(len, &locked));
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
  if (mapped_ < PageSize()) {
    Pool().Give(data_, mapped_);
    data_ = nullptr;
    size_ = 0;
    mapped_ = 0;
    return;
  }
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
