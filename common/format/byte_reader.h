// ByteReader: a bounds-checked cursor over a byte span, used by the format parsers (internal).
#pragma once

#include <array>
#include <cstdint>

#include "common/base/bytes.h"

namespace kmsfs::format::internal {

// Every Read* either consumes exactly the requested bytes and returns true, or consumes nothing
// and returns false. Parsers therefore never index past the end: they ask, and stop on false.
// The span is borrowed and must outlive the reader.
class ByteReader {
 public:
  explicit ByteReader(ByteSpan data) : data_(data) {}

  size_t position() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  bool AtEnd() const { return pos_ == data_.size(); }

  bool ReadBytes(size_t n, ByteSpan* out) {
    if (n > remaining()) return false;
    *out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  template <size_t N>
  bool ReadArray(std::array<uint8_t, N>* out) {
    ByteSpan b;
    if (!ReadBytes(N, &b)) return false;
    for (size_t i = 0; i < N; ++i) (*out)[i] = b[i];
    return true;
  }
  bool ReadU8(uint8_t* v) {
    if (remaining() < 1) return false;
    *v = data_[pos_++];
    return true;
  }
  bool ReadU16(uint16_t* v) {
    ByteSpan b;
    if (!ReadBytes(2, &b)) return false;
    *v = GetU16(b.data());
    return true;
  }
  bool ReadU32(uint32_t* v) {
    ByteSpan b;
    if (!ReadBytes(4, &b)) return false;
    *v = GetU32(b.data());
    return true;
  }

 private:
  ByteSpan data_;
  size_t pos_ = 0;
};

inline void AppendBytes(Bytes* out, ByteSpan b) { out->insert(out->end(), b.begin(), b.end()); }
inline void AppendU8(Bytes* out, uint8_t v) { out->push_back(v); }
inline void AppendU16(Bytes* out, uint16_t v) {
  uint8_t b[2];
  PutU16(b, v);
  out->insert(out->end(), b, b + 2);
}
inline void AppendU32(Bytes* out, uint32_t v) {
  uint8_t b[4];
  PutU32(b, v);
  out->insert(out->end(), b, b + 4);
}

// True iff every byte is zero. Not constant-time: only for public structure (padding, ids).
inline bool AllZero(ByteSpan b) {
  for (uint8_t c : b) {
    if (c != 0) return false;
  }
  return true;
}

}  // namespace kmsfs::format::internal
