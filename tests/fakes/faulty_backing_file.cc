#include "tests/fakes/faulty_backing_file.h"

#include <algorithm>
#include <cerrno>

namespace kmsfs::fakes {

Result<size_t> FaultyBackingFile::PRead(std::span<uint8_t> buf, uint64_t offset) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (read_err_ != 0) {
      ++failures_;
      return Error::FromErrno("pread (injected)", read_err_);
    }
  }
  return target_->PRead(buf, offset);
}

Status FaultyBackingFile::PWrite(ByteSpan data, uint64_t offset) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ok_writes_left_.has_value()) {
    if (*ok_writes_left_ == 0 && failing_writes_left_ > 0) {
      ++failures_;
      --failing_writes_left_;
      if (short_write_ && data.size() > 1) {
        KMSFS_RETURN_IF_ERROR(target_->PWrite(data.first(data.size() / 2), offset));
      }
      return Error::FromErrno("pwrite (injected)", write_err_);
    }
    if (*ok_writes_left_ > 0) --*ok_writes_left_;
  }
  const uint64_t end = offset + data.size();
  if (capacity_.has_value() && end > written_end_ && end > *capacity_) {
    ++failures_;
    if (offset < *capacity_) {
      KMSFS_RETURN_IF_ERROR(target_->PWrite(data.first(*capacity_ - offset), offset));
      written_end_ = std::max(written_end_, *capacity_);
    }
    return Error::FromErrno("pwrite (injected)", ENOSPC);
  }
  KMSFS_RETURN_IF_ERROR(target_->PWrite(data, offset));
  written_end_ = std::max(written_end_, end);
  return Status::Ok();
}

Result<uint64_t> FaultyBackingFile::Size() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (size_err_ != 0) {
      ++failures_;
      return Error::FromErrno("fstat (injected)", size_err_);
    }
  }
  return target_->Size();
}

Status FaultyBackingFile::Truncate(uint64_t size) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (truncate_err_ != 0) {
      ++failures_;
      return Error::FromErrno("ftruncate (injected)", truncate_err_);
    }
  }
  KMSFS_RETURN_IF_ERROR(target_->Truncate(size));
  std::lock_guard<std::mutex> lock(mu_);
  written_end_ = std::min(written_end_, size);
  return Status::Ok();
}

Status FaultyBackingFile::Sync(bool data_only) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (sync_err_ != 0) {
      ++failures_;
      return Error::FromErrno("fsync (injected)", sync_err_);
    }
  }
  return target_->Sync(data_only);
}

void FaultyBackingFile::SetCapacity(uint64_t bytes) {
  auto size = target_->Size();
  std::lock_guard<std::mutex> lock(mu_);
  capacity_ = bytes;
  written_end_ = size.ok() ? *size : 0;
}

void FaultyBackingFile::FailWritesAfter(uint64_t ok_calls, int err, bool short_write,
                                        uint64_t fail_calls) {
  std::lock_guard<std::mutex> lock(mu_);
  ok_writes_left_ = ok_calls;
  failing_writes_left_ = fail_calls;
  write_err_ = err;
  short_write_ = short_write;
}

void FaultyBackingFile::FailReads(int err) {
  std::lock_guard<std::mutex> lock(mu_);
  read_err_ = err;
}
void FaultyBackingFile::FailTruncate(int err) {
  std::lock_guard<std::mutex> lock(mu_);
  truncate_err_ = err;
}
void FaultyBackingFile::FailSync(int err) {
  std::lock_guard<std::mutex> lock(mu_);
  sync_err_ = err;
}
void FaultyBackingFile::FailSize(int err) {
  std::lock_guard<std::mutex> lock(mu_);
  size_err_ = err;
}

void FaultyBackingFile::Heal() {
  std::lock_guard<std::mutex> lock(mu_);
  capacity_.reset();
  ok_writes_left_.reset();
  failing_writes_left_ = 0;
  write_err_ = read_err_ = truncate_err_ = sync_err_ = size_err_ = 0;
  short_write_ = false;
}

uint64_t FaultyBackingFile::failures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failures_;
}

}  // namespace kmsfs::fakes
