#include "common/format/encryption_context.h"

#include "common/format/byte_reader.h"

namespace kmsfs::format {

using internal::AppendBytes;
using internal::AppendU16;

Result<Bytes> CanonicalContext(const EncryptionContext& ctx) {
  // The limits keep every length inside its u16 field, which is what makes the encoding
  // injective; they are checked before anything is written.
  if (ctx.size() > kMaxContextPairs) {
    return Error(Code::kInvalidArgument, "encryption context: too many pairs");
  }
  size_t total = 2;
  for (const auto& [key, value] : ctx) {
    if (key.empty()) return Error(Code::kInvalidArgument, "encryption context: empty key");
    if (key.size() > kMaxContextKeyLen) {
      return Error(Code::kInvalidArgument, "encryption context: key too long");
    }
    if (value.size() > kMaxContextValueLen) {
      return Error(Code::kInvalidArgument, "encryption context: value too long");
    }
    total += 4 + key.size() + value.size();
  }
  Bytes out;
  out.reserve(total);
  AppendU16(&out, uint16_t(ctx.size()));
  for (const auto& [key, value] : ctx) {
    AppendU16(&out, uint16_t(key.size()));
    AppendBytes(&out, AsBytes(key));
    AppendU16(&out, uint16_t(value.size()));
    AppendBytes(&out, AsBytes(value));
  }
  return out;
}

Result<EncryptionContext> ParseCanonicalContext(ByteSpan bytes) {
  auto corrupt = [](const char* what) {
    return Error(Code::kCorrupt, std::string("encryption context: ") + what);
  };
  internal::ByteReader r(bytes);
  uint16_t count;
  if (!r.ReadU16(&count)) return corrupt("truncated count");
  if (count > kMaxContextPairs) return corrupt("too many pairs");
  EncryptionContext ctx;
  const std::string* previous = nullptr;
  for (uint16_t i = 0; i < count; ++i) {
    uint16_t key_len, value_len;
    ByteSpan key, value;
    if (!r.ReadU16(&key_len)) return corrupt("truncated key length");
    if (key_len == 0 || key_len > kMaxContextKeyLen) return corrupt("key length out of range");
    if (!r.ReadBytes(key_len, &key)) return corrupt("truncated key");
    if (!r.ReadU16(&value_len)) return corrupt("truncated value length");
    if (value_len > kMaxContextValueLen) return corrupt("value length out of range");
    if (!r.ReadBytes(value_len, &value)) return corrupt("truncated value");
    std::string k(AsChars(key));
    // Strictly ascending keys: rejects duplicates and any non-canonical order.
    if (previous != nullptr && !(*previous < k)) return corrupt("keys not strictly ascending");
    auto it = ctx.emplace(std::move(k), std::string(AsChars(value))).first;
    previous = &it->first;
  }
  if (!r.AtEnd()) return corrupt("trailing bytes");
  return ctx;
}

EncryptionContext FileDekContext(std::span<const uint8_t, 16> volume_id,
                                 std::span<const uint8_t, 16> file_id) {
  return {{kContextVolume, HexEncode(volume_id)}, {kContextFile, HexEncode(file_id)}};
}

EncryptionContext NameKeyContext(std::span<const uint8_t, 16> volume_id) {
  return {{kContextVolume, HexEncode(volume_id)}, {kContextPurpose, kPurposeNames}};
}

}  // namespace kmsfs::format
