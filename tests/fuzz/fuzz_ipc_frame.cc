// Fuzzes the keyd framing: FrameDecoder fed in random chunk sizes, and ReadFrame over a socketpair,
// both checked against a trivially correct reference decoder. Invariants: no crash, no frame above
// the limit, no allocation above it (run with -malloc_limit_mb), and identical results.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/bytes.h"
#include "common/base/unique_fd.h"
#include "common/ipc/frame.h"

namespace {

using kmsfs::ipc::FrameDecoder;
using kmsfs::ipc::kMaxFrame;

void Require(bool ok) {
  if (!ok) std::abort();
}

struct Reference {
  std::vector<std::string> frames;
  bool bad_length = false;  // stopped at a zero or oversized header
  bool at_boundary = true;  // nothing partial at the end
};

Reference Decode(std::string_view s, size_t max_frame) {
  Reference ref;
  size_t pos = 0;
  while (pos < s.size()) {
    if (s.size() - pos < 4) {
      ref.at_boundary = false;
      break;
    }
    const uint32_t len = kmsfs::GetU32(reinterpret_cast<const uint8_t*>(s.data() + pos));
    if (len == 0 || len > max_frame) {
      ref.bad_length = true;
      break;
    }
    if (s.size() - pos - 4 < len) {
      ref.at_boundary = false;
      break;
    }
    ref.frames.emplace_back(s.substr(pos + 4, len));
    pos += 4 + len;
  }
  return ref;
}

// xorshift: chunk sizes derived from the input, so a crash reproduces exactly.
uint32_t Next(uint32_t& x) {
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return x;
}

void CheckDecoder(std::string_view stream, size_t max_frame, uint32_t seed) {
  const Reference ref = Decode(stream, max_frame);
  FrameDecoder decoder(max_frame);
  std::vector<std::string> got;
  bool failed = false;
  uint32_t x = seed | 1;
  size_t pos = 0;
  while (pos < stream.size()) {
    const uint32_t r = Next(x);
    // Mostly small chunks (headers split across calls), sometimes large ones.
    const size_t want = (r & 7) == 0 ? (r >> 3) % 70000 + 1 : (r >> 3) % 9 + 1;
    const size_t n = std::min(want, stream.size() - pos);
    const bool ok = decoder.Feed(stream.substr(pos, n)).ok();
    pos += n;
    while (auto f = decoder.Next()) {
      Require(!f->empty() && f->size() <= max_frame);
      got.push_back(std::move(*f));
    }
    if (!ok) {
      failed = true;
      Require(decoder.poisoned());
      Require(!decoder.Feed("x").ok());  // stays poisoned
      break;
    }
  }
  Require(got == ref.frames);
  Require(failed == ref.bad_length);
  if (!failed) Require(decoder.AtBoundary() == ref.at_boundary);
}

// The blocking reader over a real socket must agree too. Kept to inputs that fit the socket
// buffer, so the writer never blocks.
void CheckReadFrame(std::string_view stream, size_t max_frame) {
  if (stream.size() > 64 * 1024) return;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return;
  kmsfs::UniqueFd a(fds[0]), b(fds[1]);
  if (!stream.empty() && ::send(a.get(), stream.data(), stream.size(), MSG_NOSIGNAL) !=
                             static_cast<ssize_t>(stream.size())) {
    return;
  }
  a.Reset();  // EOF after the data
  const Reference ref = Decode(stream, max_frame);
  for (const std::string& want : ref.frames) {
    auto got = kmsfs::ipc::ReadFrame(b.get(), kmsfs::ipc::Deadline::Never(), max_frame);
    Require(got.ok() && *got == want);
  }
  auto last = kmsfs::ipc::ReadFrame(b.get(), kmsfs::ipc::Deadline::Never(), max_frame);
  Require(!last.ok());
  if (ref.bad_length) {
    Require(last.error().code() == kmsfs::Code::kCorrupt);
  } else {
    Require(kmsfs::ipc::IsCleanClose(last.error()) == ref.at_boundary);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // Byte 0 picks the limit: the real one, or a tiny one so that the oversize path is hit often.
  const size_t max_frame = (data[0] & 1) ? kMaxFrame : static_cast<size_t>(data[0] >> 1) + 1;
  const uint32_t seed = data[1] * 2654435761u;
  const std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);
  CheckDecoder(stream, max_frame, seed);
  CheckReadFrame(stream, max_frame);
  return 0;
}
