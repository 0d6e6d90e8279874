// Framing: one message = u32 big-endian length + that many bytes of JSON, over a stream socket.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include "common/base/status.h"
#include "common/ipc/deadline.h"

namespace kmsfs::ipc {

// Largest payload either side sends or accepts. Bounds the memory one connection can pin; the
// largest real message (a ListAudit page or a key policy) is far below it.
inline constexpr size_t kMaxFrame = 256 * 1024;
inline constexpr size_t kFrameHeaderLen = 4;

// Blocking API: both calls take any stream socket (blocking or not: every send/recv is
// MSG_DONTWAIT and waiting is poll(2) against `deadline`), retry on EINTR and on short transfers,
// and never raise SIGPIPE (MSG_NOSIGNAL). Thread-compatible: one reader and one writer per fd.
//
// Failure codes: kInvalidArgument (caller's payload), kCorrupt (peer broke the framing),
// kUnavailable (deadline passed — sys_errno ETIMEDOUT —, or the peer is gone: EOF, EPIPE,
// ECONNRESET), kIo (any other errno, kept). After any failure other than kInvalidArgument the
// stream is out of sync: close it.

// Sends one frame. kInvalidArgument, before anything is sent, unless 1 <= size <= kMaxFrame.
// On failure an unknown prefix of the frame may have been sent; the receiver then never sees a
// complete frame, so the request cannot have been executed (KeydClient relies on this to retry).
Status WriteFrame(int fd, std::string_view payload, Deadline deadline);

// Receives exactly one frame and nothing beyond it. The announced length is checked before any
// allocation: 0 or more than `max_frame` (<= kMaxFrame) is kCorrupt. A partial payload is wiped
// before it is freed (it may hold a secret). EOF before the first byte of a frame is
// IsCleanClose(); EOF inside a frame is plain kUnavailable.
Result<std::string> ReadFrame(int fd, Deadline deadline, size_t max_frame = kMaxFrame);

// True for the error ReadFrame returns when the peer closed the connection between frames — the
// normal end of a session, which a server should not log as a failure.
bool IsCleanClose(const Error& e);

// Incremental API for a poll/epoll-driven server: feed whatever recv() returned, take out complete
// frames. Never allocates more than max_frame for a frame, and never before its 4-byte header
// has arrived and passed the limit check. Thread-compatible (one owner).
//
// Backpressure is the caller's: completed frames queue up, so a server handling one request at a
// time should stop reading the socket while pending() > 0 (a client may pipeline).
class FrameDecoder {
 public:
  // REQUIRES: 1 <= max_frame <= kMaxFrame.
  explicit FrameDecoder(size_t max_frame = kMaxFrame);
  ~FrameDecoder();  // wipes buffered bytes
  FrameDecoder(FrameDecoder&&) noexcept = default;
  FrameDecoder& operator=(FrameDecoder&& other) noexcept;  // wipes what it replaces
  FrameDecoder(const FrameDecoder&) = delete;
  FrameDecoder& operator=(const FrameDecoder&) = delete;

  // Consumes all of `bytes`. kCorrupt on a length header of 0 or above max_frame; the decoder is
  // then poisoned (the stream cannot be resynchronized) and every later Feed fails the same way.
  // Frames completed before the bad header stay available from Next().
  Status Feed(std::string_view bytes);
  // The oldest complete frame, or nullopt. The caller owns (and should wipe) it.
  std::optional<std::string> Next();

  size_t pending() const { return frames_.size(); }
  // No partial frame buffered: EOF now is a clean close, not a truncated message.
  bool AtBoundary() const { return header_got_ == 0 && !in_payload_; }
  bool poisoned() const { return !poison_.empty(); }

 private:
  void WipeBuffers() noexcept;

  size_t max_frame_;
  uint8_t header_[kFrameHeaderLen] = {};
  size_t header_got_ = 0;    // bytes of the current header received
  bool in_payload_ = false;  // header done, payload_ being filled
  size_t want_ = 0;          // payload length announced by the current header
  std::string payload_;      // reserved to want_ exactly, so it never reallocates (and copies)
  std::deque<std::string> frames_;
  std::string poison_;       // non-empty once poisoned: the error message
};

}  // namespace kmsfs::ipc
