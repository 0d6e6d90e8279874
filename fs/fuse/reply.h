// Answer: the single errno boundary — every FUSE operation's core call becomes exactly one reply.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <cerrno>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include "common/base/status.h"
#include "fs/fuse/errno_map.h"

namespace kmsfs::fs {

// Logs a failed operation once, redacted, at the level docs/errors.md gives its code: kIo debug,
// kNotFound/kAlreadyExists/kInvalidArgument nothing, kPermissionDenied info once per burst,
// kKeyUnavailable and kUnavailable warn at most once per burst (a dead keyd makes every open fail;
// one line per 10 s says so without flooding the journal), kCorrupt warn (the core's message names
// the file id and block; we add the backing inode number, never a path or a name), kInternal error.
// `backing_ino` is 0 when unknown. Thread-safe.
void LogFailure(const char* op, uint64_t backing_ino, const Error& error);
// A bug escaped as an exception: always logged at error.
void LogBug(const char* op, const char* what);

// The shape of STYLE.md §3: `fn` runs the operation and returns a Status or a Result<T>; on
// success `on_ok(req, value)` sends the one success reply (on_ok must not throw and must reply);
// on failure the error is logged (LogFailure) and answered with ErrnoFor. Exceptions become EIO
// (bad_alloc ENOMEM). Nothing escapes into libfuse's C frames.
template <class Fn, class OnOk>
void Answer(fuse_req_t req, const char* op, uint64_t backing_ino, Fn&& fn, OnOk&& on_ok) noexcept {
  using R = std::invoke_result_t<Fn>;
  try {
    R r = fn();
    if (!r.ok()) {
      LogFailure(op, backing_ino, r.error());
      fuse_reply_err(req, ErrnoFor(r.error()));
      return;
    }
    if constexpr (std::is_same_v<R, Status>) {
      on_ok(req);
    } else {
      on_ok(req, r.value());
    }
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (const std::exception& e) {
    LogBug(op, e.what());
    fuse_reply_err(req, EIO);
  } catch (...) {
    LogBug(op, "unknown exception");
    fuse_reply_err(req, EIO);
  }
}

// For operations whose success reply carries nothing (unlink, rename, release, ...): errno 0.
template <class Fn>
void AnswerEmpty(fuse_req_t req, const char* op, uint64_t backing_ino, Fn&& fn) noexcept {
  Answer(req, op, backing_ino, std::forward<Fn>(fn), [](fuse_req_t r) { fuse_reply_err(r, 0); });
}

}  // namespace kmsfs::fs
