// libFuzzer target: WrappedBlob and canonical EncryptionContext parsing (common/format).
// Property: whatever parses re-serializes to exactly the input (the layouts have no free bits),
// and parsing never reads out of bounds, throws, or aborts on any input.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "common/base/check.h"
#include "common/format/encryption_context.h"
#include "common/format/wrapped_blob.h"

namespace kmsfs::format {
namespace {

int FuzzOne(const uint8_t* data, size_t size) {
  const kmsfs::ByteSpan input(data, size);

  auto blob = ParseWrappedBlob(input);
  KMSFS_CHECK(blob.ok() == PeekWrappedBlobKey(input).ok());
  if (blob.ok()) {
    auto bytes = SerializeWrappedBlob(*blob);
    KMSFS_CHECK(bytes.ok());
    KMSFS_CHECK(kmsfs::ByteSpan(*bytes).size() == size);
    KMSFS_CHECK(std::equal(bytes->begin(), bytes->end(), data));
    auto again = ParseWrappedBlob(*bytes);
    KMSFS_CHECK(again.ok() && *again == *blob);
    const kmsfs::Bytes prefix = blob->AadPrefix();
    KMSFS_CHECK(!prefix.empty() && prefix.size() < size);
    KMSFS_CHECK(std::equal(prefix.begin(), prefix.end(), data));
  }

  auto ctx = ParseCanonicalContext(input);
  if (ctx.ok()) {
    auto bytes = CanonicalContext(*ctx);
    KMSFS_CHECK(bytes.ok());
    KMSFS_CHECK(bytes->size() == size && std::equal(bytes->begin(), bytes->end(), data));
  }
  return 0;
}

}  // namespace
}  // namespace kmsfs::format

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return kmsfs::format::FuzzOne(data, size);
}
