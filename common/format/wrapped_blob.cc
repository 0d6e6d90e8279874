#include "common/format/wrapped_blob.h"

#include <algorithm>

#include "common/format/byte_reader.h"
#include "common/format/key_id.h"

namespace kmsfs::format {
namespace {

using internal::AppendBytes;
using internal::AppendU16;
using internal::AppendU32;
using internal::AppendU8;

constexpr uint8_t kMagic[4] = {'K', 'M', 'W', 'B'};
static_assert(WrappedBlob::kMaxKeyIdLen == kMaxKeyIdLen);
static_assert(WrappedBlob::kMaxCiphertextLen <= 0xffff, "ct_len is a u16");

Error Corrupt(const char* what) {
  return Error(Code::kCorrupt, std::string("wrapped blob: ") + what);
}
Error Invalid(const char* what) {
  return Error(Code::kInvalidArgument, std::string("wrapped blob: ") + what);
}

// The checks shared by Serialize and AadPrefix; nullptr when valid.
const char* PrefixProblem(const WrappedBlob& blob) {
  if (!IsValidKeyId(blob.key_id)) return "key id must be 1..64 chars of [A-Za-z0-9-]";
  if (blob.key_version == 0) return "key version must be >= 1";
  return nullptr;
}

void AppendPrefix(const WrappedBlob& blob, Bytes* out) {
  AppendBytes(out, kMagic);
  AppendU8(out, WrappedBlob::kVersion);
  AppendU8(out, uint8_t(blob.key_id.size()));
  AppendBytes(out, AsBytes(blob.key_id));
  AppendU32(out, blob.key_version);
  AppendBytes(out, blob.salt);
}

}  // namespace

Bytes WrappedBlob::AadPrefix() const {
  Bytes out;
  if (PrefixProblem(*this) != nullptr) return out;
  out.reserve(4 + 1 + 1 + key_id.size() + 4 + kSaltLen);
  AppendPrefix(*this, &out);
  return out;
}

Result<WrappedBlob> ParseWrappedBlob(ByteSpan bytes) {
  // Overall bounds first: a cheap rejection of anything that cannot possibly be a v1 blob.
  if (bytes.size() < WrappedBlob::kMinLen) return Corrupt("too short");
  if (bytes.size() > WrappedBlob::kMaxLen) return Corrupt("too long");
  internal::ByteReader r(bytes);
  ByteSpan magic;
  uint8_t version, key_id_len;
  if (!r.ReadBytes(4, &magic) || !std::equal(magic.begin(), magic.end(), kMagic)) {
    return Corrupt("bad magic");
  }
  if (!r.ReadU8(&version)) return Corrupt("truncated");
  if (version != WrappedBlob::kVersion) return Corrupt("unknown version");
  WrappedBlob blob;
  ByteSpan key_id;
  if (!r.ReadU8(&key_id_len) || !r.ReadBytes(key_id_len, &key_id)) return Corrupt("truncated");
  blob.key_id.assign(AsChars(key_id));
  if (!IsValidKeyId(blob.key_id)) return Corrupt("invalid key id");
  if (!r.ReadU32(&blob.key_version)) return Corrupt("truncated");
  if (blob.key_version == 0) return Corrupt("key version 0");
  uint16_t ct_len;
  if (!r.ReadArray(&blob.salt) || !r.ReadArray(&blob.nonce) || !r.ReadU16(&ct_len)) {
    return Corrupt("truncated");
  }
  if (ct_len == 0 || ct_len > WrappedBlob::kMaxCiphertextLen) {
    return Corrupt("ciphertext length out of range");
  }
  ByteSpan ct;
  if (!r.ReadBytes(ct_len, &ct)) return Corrupt("truncated ciphertext");
  blob.ciphertext.assign(ct.begin(), ct.end());
  if (!r.ReadArray(&blob.tag)) return Corrupt("truncated tag");
  if (!r.AtEnd()) return Corrupt("trailing bytes");
  return blob;
}

Result<Bytes> SerializeWrappedBlob(const WrappedBlob& blob) {
  if (const char* problem = PrefixProblem(blob)) return Invalid(problem);
  if (blob.ciphertext.empty() || blob.ciphertext.size() > WrappedBlob::kMaxCiphertextLen) {
    return Invalid("ciphertext length must be 1..4096");
  }
  Bytes out;
  out.reserve(WrappedBlob::kFixedLen + blob.key_id.size() + blob.ciphertext.size());
  AppendPrefix(blob, &out);
  AppendBytes(&out, blob.nonce);
  AppendU16(&out, uint16_t(blob.ciphertext.size()));
  AppendBytes(&out, blob.ciphertext);
  AppendBytes(&out, blob.tag);
  return out;
}

Result<std::pair<std::string, uint32_t>> PeekWrappedBlobKey(ByteSpan bytes) {
  KMSFS_ASSIGN_OR_RETURN(WrappedBlob blob, ParseWrappedBlob(bytes));
  return std::make_pair(std::move(blob.key_id), blob.key_version);
}

}  // namespace kmsfs::format
