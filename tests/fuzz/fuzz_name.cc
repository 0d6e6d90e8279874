// libFuzzer target: metadata entries, block layout size math, and backing-name decoding
// (common/format). Every accepted input must re-encode to exactly itself.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/base/check.h"
#include "common/format/base64.h"
#include "common/format/block_layout.h"
#include "common/format/name_encoding.h"

namespace kmsfs::format {
namespace {

void CheckMetaEntry(kmsfs::ByteSpan input) {
  auto entry = ParseMetaEntry(input);
  if (!entry.ok()) return;
  KMSFS_CHECK(input.size() == kMetaEntrySize);
  auto bytes = SerializeMetaEntry(*entry);
  KMSFS_CHECK(bytes.ok() && std::equal(bytes->begin(), bytes->end(), input.begin()));
  // Structural rules never crash, whatever the position.
  (void)CheckEntryForBlock(*entry, 0, 1);
  (void)CheckEntryForBlock(*entry, 5, 3);
}

void CheckSizes(kmsfs::ByteSpan input) {
  if (input.size() < 8) return;
  const uint64_t n = kmsfs::GetU64(input.data());
  auto plain = PlaintextSizeForBackingSize(n);
  if (plain.ok()) {
    auto backing = BackingSizeForPlaintextSize(*plain);
    KMSFS_CHECK(backing.ok() && *backing == n);
  }
  auto backing = BackingSizeForPlaintextSize(n);
  if (backing.ok()) {
    auto back = PlaintextSizeForBackingSize(*backing);
    KMSFS_CHECK(back.ok() && *back == n);
    const uint64_t last = BlockCount(n) - 1;
    KMSFS_CHECK(DataOffset(last) + BlockPlaintextLen(n, last) == *backing);
  }
}

void CheckName(std::string_view name) {
  auto decoded = DecodeBackingName(name);
  if (decoded.ok()) {
    KMSFS_CHECK(!IsReservedBackingName(name));
    KMSFS_CHECK(EncodeName(*decoded) == name);
  }
  auto digest = ParseLongName(name);
  if (digest.ok()) {
    KMSFS_CHECK(IsReservedBackingName(name));
    KMSFS_CHECK(LongNameFor(*digest) == name);
    KMSFS_CHECK(IsLongNameSideFile(LongNameSideFile(name)));
  }
  auto side = ParseLongNameSideFile(kmsfs::AsBytes(name));
  if (side.ok()) KMSFS_CHECK(*side == name && NeedsLongName(name) && decoded.ok());
  if (ValidatePlaintextName(name).ok()) {
    KMSFS_CHECK(ValidateDecryptedName(name).ok());
    KMSFS_CHECK(name.size() <= kMaxNameLen && name.find('/') == std::string_view::npos);
  }
  auto std64 = Base64Decode(name);
  if (std64.ok()) KMSFS_CHECK(Base64Encode(*std64) == name);
  auto url64 = Base64UrlDecode(name);
  if (url64.ok()) KMSFS_CHECK(Base64UrlEncode(*url64) == name);
  auto dir_id = ParseDirId(kmsfs::AsBytes(name));
  if (dir_id.ok()) {
    KMSFS_CHECK(std::equal(dir_id->begin(), dir_id->end(), kmsfs::AsBytes(name).begin()));
  }
}

void FuzzOne(const uint8_t* data, size_t size) {
  const ByteSpan input(data, size);
  CheckMetaEntry(input);
  CheckMetaEntry(input.first(std::min<size_t>(size, kMetaEntrySize)));
  CheckSizes(input);
  CheckName(std::string_view(reinterpret_cast<const char*>(data), size));
}

}  // namespace
}  // namespace kmsfs::format

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kmsfs::format::FuzzOne(data, size);
  return 0;
}
