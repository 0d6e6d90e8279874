#include "fs/lifecycle/rewrap.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "common/base/unique_fd.h"
#include "common/format/file_header.h"
#include "common/format/name_encoding.h"
#include "common/format/volume_config.h"
#include "common/format/wrapped_blob.h"
#include "fs/core/small_file.h"
#include "fs/core/volume.h"

namespace kmsfs::fs::lifecycle {
namespace {

using Clock = std::chrono::steady_clock;

// Shared by the workers: the highest version keyd has answered with, per key id. A header at
// that version is current and needs no call; a rotation during the run raises it.
class CurrentVersions {
 public:
  uint32_t Get(const std::string& key_id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = v_.find(key_id);
    return it == v_.end() ? 0 : it->second;
  }
  void Learn(const std::string& key_id, uint32_t version) {
    std::lock_guard<std::mutex> lock(mu_);
    uint32_t& v = v_[key_id];
    v = std::max(v, version);
  }

 private:
  std::mutex mu_;
  std::map<std::string, uint32_t> v_;  // guarded by mu_
};

// A token bucket of one: calls are spaced 1/rate apart across all workers.
class RateLimiter {
 public:
  explicit RateLimiter(double rate) : rate_(rate), next_(Clock::now()) {}
  void Acquire() {
    if (rate_ <= 0) return;
    Clock::time_point slot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto now = Clock::now();
      if (next_ < now) next_ = now;
      slot = next_;
      next_ +=
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / rate_));
    }
    std::this_thread::sleep_until(slot);
  }

 private:
  const double rate_;
  std::mutex mu_;
  Clock::time_point next_;  // guarded by mu_
};

enum class Outcome { kRewrapped, kCurrent };

Result<Outcome> RewrapOne(const std::string& path, std::span<const uint8_t, 16> volume_id,
                          WrapService* keyd, CurrentVersions* current, RateLimiter* limiter,
                          bool dry_run) {
  UniqueFd fd(::open(path.c_str(), (dry_run ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return Error::FromErrno("open backing file", errno);
  // A concurrent header change (another rewrap, a future header update by the mount) between
  // our read and our write is caught by the re-read below; then we start over with the new page.
  for (int attempt = 0; attempt < 3; ++attempt) {
    KMSFS_ASSIGN_OR_RETURN(Bytes page, ReadHeaderPage(fd.get()));
    KMSFS_ASSIGN_OR_RETURN(format::FileHeader header, format::ParseFileHeader(page));
    KMSFS_ASSIGN_OR_RETURN(auto key, format::PeekWrappedBlobKey(header.wrapped_dek));
    const uint32_t known = current->Get(key.first);
    if (known != 0 && key.second >= known) return Outcome::kCurrent;
    limiter->Acquire();
    KMSFS_ASSIGN_OR_RETURN(
        WrapService::Rewrapped fresh,
        keyd->ReEncrypt(header.wrapped_dek, format::FileDekContext(volume_id, header.file_id),
                        key.first));
    current->Learn(key.first, fresh.version);
    if (fresh.version <= key.second) return Outcome::kCurrent;  // it was current already
    KMSFS_ASSIGN_OR_RETURN(auto new_key, format::PeekWrappedBlobKey(fresh.blob));
    if (new_key.first != key.first || new_key.second != fresh.version) {
      return Error(Code::kInternal, "keyd answered with a blob under another key or version");
    }
    KMSFS_ASSIGN_OR_RETURN(Bytes new_page, RewrapHeaderPage(page, fresh.blob));
    if (dry_run) return Outcome::kRewrapped;
    // Only the first sector is written, so only it must still be what we read: a link-slot
    // update by the mount (beyond kAtomicPrefix) meanwhile is kept, not overwritten.
    KMSFS_ASSIGN_OR_RETURN(Bytes again, ReadHeaderPage(fd.get()));
    if (!std::equal(again.begin(), again.begin() + kAtomicPrefix, page.begin())) continue;
    // One write of the first sector: the only bytes that differ (RewrapHeaderPage checked it).
    // A 512-byte aligned write inside one sector is atomic on the devices we support, so a crash
    // leaves the old or the new blob, each a complete header.
    ssize_t n;
    do {
      n = ::pwrite(fd.get(), new_page.data(), kAtomicPrefix, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return Error::FromErrno("write header", errno);
    if (static_cast<size_t>(n) != kAtomicPrefix) {
      return Error(Code::kIo, "short write of the header sector", EIO);
    }
    if (::fdatasync(fd.get()) != 0) return Error::FromErrno("fdatasync backing file", errno);
    return Outcome::kRewrapped;
  }
  return Error(Code::kUnavailable, "header kept changing while being rewrapped; run again");
}

}  // namespace

Result<Bytes> RewrapHeaderPage(ByteSpan old_page, ByteSpan new_blob) {
  KMSFS_ASSIGN_OR_RETURN(format::FileHeader header, format::ParseFileHeader(old_page));
  header.wrapped_dek.assign(new_blob.begin(), new_blob.end());
  KMSFS_ASSIGN_OR_RETURN(Bytes page, format::SerializeFileHeader(header));
  if (page.size() != old_page.size()) {
    return Error(Code::kFailedPrecondition, "rewrapped header has another size");
  }
  if (!std::equal(page.begin() + kAtomicPrefix, page.end(), old_page.begin() + kAtomicPrefix)) {
    return Error(Code::kFailedPrecondition,
                 "rewrapped header differs beyond its first sector; not written");
  }
  return page;
}

RewrapResult RewrapFiles(const std::vector<BackingEntry>& entries,
                         std::span<const uint8_t, 16> volume_id, const WrapServiceFactory& keyd,
                         const RewrapOptions& options) {
  RewrapResult result;
  result.files = entries.size();
  CurrentVersions current;
  RateLimiter limiter(options.rate);
  std::atomic<size_t> next{0};
  std::mutex mu;  // guards result's counters and failures, and serializes on_progress
  uint64_t done = 0;
  auto worker = [&] {
    std::unique_ptr<WrapService> service = keyd();
    for (size_t i = next++; i < entries.size(); i = next++) {
      auto r = RewrapOne(entries[i].backing_path, volume_id, service.get(), &current, &limiter,
                         options.dry_run);
      std::lock_guard<std::mutex> lock(mu);
      ++done;
      if (!r.ok()) {
        result.failures.emplace_back(entries[i].Display(), r.error().message());
      } else if (*r == Outcome::kRewrapped) {
        ++result.rewrapped;
      } else {
        ++result.current;
      }
      if (options.on_progress) options.on_progress(done, entries.size(), result.failures.size());
    }
  };
  const unsigned jobs = std::clamp<unsigned>(options.jobs, 1, 64);
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < jobs; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  std::sort(result.failures.begin(), result.failures.end());
  return result;
}

Result<bool> RewrapVolumeConfig(const Volume& volume, WrapService* keyd, bool dry_run) {
  format::VolumeConfig config = volume.config();
  KMSFS_ASSIGN_OR_RETURN(auto key, format::PeekWrappedBlobKey(config.name_key_blob));
  KMSFS_ASSIGN_OR_RETURN(
      WrapService::Rewrapped fresh,
      keyd->ReEncrypt(config.name_key_blob, format::NameKeyContext(config.volume_id), key.first));
  if (fresh.version <= key.second) return false;
  if (dry_run) return true;
  config.name_key_blob = std::move(fresh.blob);
  // The MAC covers NameKeyBlob (format.md §5); the name key itself is unchanged, so the MAC key
  // derived from it is too.
  KMSFS_ASSIGN_OR_RETURN(Bytes mac_input, format::VolumeConfigMacInput(config));
  config.mac = volume.names().ConfigMac(mac_input);
  KMSFS_ASSIGN_OR_RETURN(std::string json, format::SerializeVolumeConfig(config));

  UniqueFd dir(::open(volume.cipherdir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return Error::FromErrno("open cipher directory", errno);
  // Replace kmsfs.conf all or nothing: a complete temp file, fsynced, renamed over the old one,
  // then the directory fsynced. The name is in the reserved kmsfs. namespace, so a leftover
  // from a crash is never taken for a file; the next run removes it.
  const std::string tmp = std::string(format::kVolumeConfigName) + ".rewrap.tmp";
  (void)::unlinkat(dir.get(), tmp.c_str(), 0);
  {
    UniqueFd f(::openat(dir.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400));
    if (!f.valid()) return Error::FromErrno("create " + tmp, errno);
    size_t off = 0;
    while (off < json.size()) {
      const ssize_t n = ::write(f.get(), json.data() + off, json.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::FromErrno("write " + tmp, errno);
      off += static_cast<size_t>(n);
    }
    if (::fsync(f.get()) != 0) return Error::FromErrno("fsync " + tmp, errno);
  }
  if (::renameat(dir.get(), tmp.c_str(), dir.get(), format::kVolumeConfigName.data()) != 0) {
    return Error::FromErrno("rename over kmsfs.conf", errno);
  }
  KMSFS_RETURN_IF_ERROR(SyncDirectory(dir.get()));
  return true;
}

}  // namespace kmsfs::fs::lifecycle
