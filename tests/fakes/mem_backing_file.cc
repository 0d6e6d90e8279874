#include "tests/fakes/mem_backing_file.h"

#include <algorithm>
#include <cstring>

namespace kmsfs::fakes {

void MemBackingFile::ReadLocked(uint64_t offset, std::span<uint8_t> out) const {
  size_t done = 0;
  while (done < out.size()) {
    const uint64_t pos = offset + done;
    const uint64_t index = pos / kPage;
    const size_t in_page = pos % kPage;
    const size_t n = std::min(out.size() - done, kPage - in_page);
    auto it = pages_.find(index);
    if (it == pages_.end()) {
      std::memset(out.data() + done, 0, n);
    } else {
      std::memcpy(out.data() + done, it->second.get() + in_page, n);
    }
    done += n;
  }
}

void MemBackingFile::WriteLocked(uint64_t offset, ByteSpan data) {
  size_t done = 0;
  while (done < data.size()) {
    const uint64_t pos = offset + done;
    const uint64_t index = pos / kPage;
    const size_t in_page = pos % kPage;
    const size_t n = std::min(data.size() - done, kPage - in_page);
    Page& page = pages_[index];
    if (!page) {
      page = std::make_unique<uint8_t[]>(kPage);
      std::memset(page.get(), 0, kPage);
    }
    std::memcpy(page.get() + in_page, data.data() + done, n);
    done += n;
  }
  size_ = std::max(size_, offset + data.size());
}

void MemBackingFile::TruncateLocked(uint64_t size) {
  if (size < size_) {
    // Drop whole pages past the end and zero the tail of the partial one, so a later extension
    // reads zeros there (as ftruncate guarantees).
    const uint64_t keep = (size + kPage - 1) / kPage;
    pages_.erase(pages_.lower_bound(keep), pages_.end());
    if (size % kPage != 0) {
      auto it = pages_.find(size / kPage);
      if (it != pages_.end()) {
        std::memset(it->second.get() + size % kPage, 0, kPage - size % kPage);
      }
    }
  }
  size_ = size;
}

Result<size_t> MemBackingFile::PRead(std::span<uint8_t> buf, uint64_t offset) {
  std::lock_guard<std::mutex> lock(mu_);
  ++read_calls_;
  if (offset >= size_) return size_t{0};
  const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size_ - offset));
  ReadLocked(offset, buf.first(n));
  return n;
}

Status MemBackingFile::PWrite(ByteSpan data, uint64_t offset) {
  std::lock_guard<std::mutex> lock(mu_);
  ++write_calls_;
  bytes_written_ += data.size();
  WriteLocked(offset, data);
  return Status::Ok();
}

Result<uint64_t> MemBackingFile::Size() {
  std::lock_guard<std::mutex> lock(mu_);
  return size_;
}

Status MemBackingFile::Truncate(uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  TruncateLocked(size);
  return Status::Ok();
}

Status MemBackingFile::Sync(bool /*data_only*/) {
  std::lock_guard<std::mutex> lock(mu_);
  ++sync_calls_;
  return Status::Ok();
}

Bytes MemBackingFile::RawRead(uint64_t offset, size_t len) const {
  std::lock_guard<std::mutex> lock(mu_);
  Bytes out(len);
  ReadLocked(offset, out);
  return out;
}

void MemBackingFile::RawWrite(uint64_t offset, ByteSpan data) {
  std::lock_guard<std::mutex> lock(mu_);
  WriteLocked(offset, data);
}

void MemBackingFile::RawTruncate(uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  TruncateLocked(size);
}

uint64_t MemBackingFile::RawSize() const {
  std::lock_guard<std::mutex> lock(mu_);
  return size_;
}

Bytes MemBackingFile::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  Bytes out(size_);
  ReadLocked(0, out);
  return out;
}

void MemBackingFile::Restore(ByteSpan bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  pages_.clear();
  size_ = 0;
  WriteLocked(0, bytes);
  size_ = bytes.size();
}

uint64_t MemBackingFile::bytes_written() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_written_;
}
uint64_t MemBackingFile::write_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return write_calls_;
}
uint64_t MemBackingFile::read_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return read_calls_;
}
size_t MemBackingFile::pages_allocated() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pages_.size();
}
uint64_t MemBackingFile::sync_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sync_calls_;
}
void MemBackingFile::ResetCounters() {
  std::lock_guard<std::mutex> lock(mu_);
  bytes_written_ = write_calls_ = read_calls_ = sync_calls_ = 0;
}

}  // namespace kmsfs::fakes
