#include "common/ipc/frame.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/base/bytes.h"
#include "common/base/scope_exit.h"
#include "common/crypto/secret.h"
#include "common/ipc/socket_util.h"

namespace kmsfs::ipc {
namespace {

constexpr std::string_view kCleanCloseMessage = "connection closed by peer";

Error LengthError(uint32_t len, size_t max_frame) {
  if (len == 0) return Error(Code::kCorrupt, "peer sent a frame of length 0");
  return Error(Code::kCorrupt, "peer announced a frame of " + std::to_string(len) +
                                   " bytes; the limit is " + std::to_string(max_frame));
}

// Reads exactly n bytes. `at_boundary`: EOF before the first byte is a clean close.
Status ReadExact(int fd, uint8_t* buf, size_t n, Deadline deadline, bool at_boundary) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, buf + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      if (got == 0 && at_boundary) return Error(Code::kUnavailable, std::string(kCleanCloseMessage));
      return Error(Code::kUnavailable, "connection closed by peer in the middle of a frame");
    }
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      KMSFS_RETURN_IF_ERROR(internal::WaitFd(fd, POLLIN, deadline, "receiving a frame"));
      continue;
    }
    return internal::SocketError("recv", err);
  }
  return Status::Ok();
}

}  // namespace

Status WriteFrame(int fd, std::string_view payload, Deadline deadline) {
  if (payload.empty()) return Error(Code::kInvalidArgument, "refusing to send an empty frame");
  if (payload.size() > kMaxFrame) {
    return Error(Code::kInvalidArgument, "message of " + std::to_string(payload.size()) +
                                             " bytes exceeds the frame limit of " +
                                             std::to_string(kMaxFrame));
  }
  uint8_t header[kFrameHeaderLen];
  PutU32(header, static_cast<uint32_t>(payload.size()));
  const size_t total = kFrameHeaderLen + payload.size();
  size_t sent = 0;
  while (sent < total) {
    // Header and payload go out in one gather write: no copy of the payload (it may be a secret)
    // and, usually, one segment for the peer to read.
    iovec iov[2];
    int iovcnt = 0;
    char* body = const_cast<char*>(payload.data());
    if (sent < kFrameHeaderLen) {
      iov[iovcnt++] = {header + sent, kFrameHeaderLen - sent};
      iov[iovcnt++] = {body, payload.size()};
    } else {
      iov[iovcnt++] = {body + (sent - kFrameHeaderLen), total - sent};
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(iovcnt);
    const ssize_t w = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      sent += static_cast<size_t>(w);
      continue;
    }
    const int err = w < 0 ? errno : EPIPE;  // 0 bytes for a non-empty write: treat as gone
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      KMSFS_RETURN_IF_ERROR(internal::WaitFd(fd, POLLOUT, deadline, "sending a frame"));
      continue;
    }
    return internal::SocketError("send", err);
  }
  return Status::Ok();
}

Result<std::string> ReadFrame(int fd, Deadline deadline, size_t max_frame) {
  max_frame = std::min(max_frame, kMaxFrame);
  uint8_t header[kFrameHeaderLen];
  KMSFS_RETURN_IF_ERROR(ReadExact(fd, header, sizeof header, deadline, /*at_boundary=*/true));
  const uint32_t len = GetU32(header);
  if (len == 0 || len > max_frame) return LengthError(len, max_frame);
  std::string payload(len, '\0');
  ScopeExit wipe([&payload] { crypto::Wipe(payload); });
  KMSFS_RETURN_IF_ERROR(ReadExact(fd, reinterpret_cast<uint8_t*>(payload.data()), len, deadline,
                                  /*at_boundary=*/false));
  wipe.Dismiss();
  return payload;
}

bool IsCleanClose(const Error& e) {
  return e.code() == Code::kUnavailable && e.message() == kCleanCloseMessage;
}

FrameDecoder::FrameDecoder(size_t max_frame) : max_frame_(max_frame) {
  KMSFS_CHECK(max_frame >= 1 && max_frame <= kMaxFrame);
}

FrameDecoder::~FrameDecoder() { WipeBuffers(); }

FrameDecoder& FrameDecoder::operator=(FrameDecoder&& other) noexcept {
  if (this != &other) {
    WipeBuffers();
    max_frame_ = other.max_frame_;
    std::memcpy(header_, other.header_, sizeof header_);
    header_got_ = std::exchange(other.header_got_, 0);
    in_payload_ = std::exchange(other.in_payload_, false);
    want_ = std::exchange(other.want_, 0);
    payload_ = std::move(other.payload_);
    frames_ = std::move(other.frames_);
    poison_ = std::move(other.poison_);
  }
  return *this;
}

void FrameDecoder::WipeBuffers() noexcept {
  crypto::Wipe(payload_);
  for (auto& f : frames_) crypto::Wipe(f);
  frames_.clear();
}

Status FrameDecoder::Feed(std::string_view bytes) {
  if (poisoned()) return Error(Code::kCorrupt, poison_);
  while (!bytes.empty()) {
    if (!in_payload_) {
      const size_t take = std::min(kFrameHeaderLen - header_got_, bytes.size());
      std::memcpy(header_ + header_got_, bytes.data(), take);
      header_got_ += take;
      bytes.remove_prefix(take);
      if (header_got_ < kFrameHeaderLen) break;
      header_got_ = 0;
      const uint32_t len = GetU32(header_);
      if (len == 0 || len > max_frame_) {
        Error e = LengthError(len, max_frame_);
        poison_ = e.message();
        return e;
      }
      want_ = len;
      payload_.clear();
      payload_.reserve(want_);
      in_payload_ = true;
    } else {
      const size_t take = std::min(want_ - payload_.size(), bytes.size());
      payload_.append(bytes.data(), take);
      bytes.remove_prefix(take);
      if (payload_.size() == want_) {
        frames_.push_back(std::move(payload_));  // moves the buffer; nothing left to wipe
        payload_ = std::string();
        in_payload_ = false;
      }
    }
  }
  return Status::Ok();
}

std::optional<std::string> FrameDecoder::Next() {
  if (frames_.empty()) return std::nullopt;
  std::string f = std::move(frames_.front());
  frames_.pop_front();
  return f;
}

}  // namespace kmsfs::ipc
