// Shared fixtures for the common/format tests: a sample wrapped DEK and hex helpers.
#pragma once

#include <string>
#include <string_view>

#include "common/base/bytes.h"
#include "common/base/check.h"
#include "common/format/ids.h"
#include "common/format/wrapped_blob.h"

namespace kmsfs::format::testing {

inline Bytes Unhex(std::string_view hex) {
  Bytes out;
  KMSFS_CHECK(HexDecode(hex, &out));
  return out;
}

// key "k1" v7, salt 00..0f, nonce 10..1b, 32-byte ciphertext 20..3f, tag 40..4f.
inline WrappedBlob SampleBlob() {
  WrappedBlob b;
  b.key_id = "k1";
  b.key_version = 7;
  for (size_t i = 0; i < b.salt.size(); ++i) b.salt[i] = uint8_t(i);
  for (size_t i = 0; i < b.nonce.size(); ++i) b.nonce[i] = uint8_t(0x10 + i);
  for (size_t i = 0; i < 32; ++i) b.ciphertext.push_back(uint8_t(0x20 + i));
  for (size_t i = 0; i < b.tag.size(); ++i) b.tag[i] = uint8_t(0x40 + i);
  return b;
}

// SampleBlob() serialized, spelled out field by field (docs/format.md shows the same bytes).
inline Bytes SampleBlobBytes() {
  return Unhex(
      "4b4d5742"                          // magic "KMWB"
      "01"                                // version
      "026b31"                            // key_id_len 2, "k1"
      "00000007"                          // key_version
      "000102030405060708090a0b0c0d0e0f"  // salt
      "101112131415161718191a1b"          // nonce
      "0020"                              // ct_len = 32
      "202122232425262728292a2b2c2d2e2f"
      "303132333435363738393a3b3c3d3e3f"  // ciphertext
      "404142434445464748494a4b4c4d4e4f"  // tag
  );
}

inline Id128 IdFromSeed(uint8_t seed) {
  Id128 id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = uint8_t(seed + i);
  return id;
}

}  // namespace kmsfs::format::testing
