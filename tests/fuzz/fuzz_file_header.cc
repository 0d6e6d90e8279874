// libFuzzer target: FileHeader parsing (common/format).
// The input is parsed as is (only exactly 4096 bytes may succeed) and also zero-padded or cut to
// one page, so short inputs still reach the header's inner fields. Whatever parses must
// re-serialize to exactly the page it came from.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "common/base/check.h"
#include "common/format/file_header.h"

namespace kmsfs::format {
namespace {

void CheckPage(kmsfs::ByteSpan page) {
  auto header = ParseFileHeader(page);
  if (!header.ok()) return;
  KMSFS_CHECK(page.size() == FileHeader::kSize);
  auto bytes = SerializeFileHeader(*header);
  KMSFS_CHECK(bytes.ok());
  KMSFS_CHECK(bytes->size() == page.size() &&
              std::equal(bytes->begin(), bytes->end(), page.begin()));
  auto again = ParseFileHeader(*bytes);
  KMSFS_CHECK(again.ok() && *again == *header);
}

}  // namespace
}  // namespace kmsfs::format

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kmsfs::format::CheckPage(kmsfs::ByteSpan(data, size));
  kmsfs::Bytes page(kmsfs::format::FileHeader::kSize, 0);
  std::copy_n(data, std::min(size, page.size()), page.begin());
  kmsfs::format::CheckPage(page);
  return 0;
}
